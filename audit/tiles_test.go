package audit

import (
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestTilePathsAreC2SP(t *testing.T) {
	for _, c := range []struct {
		tile tlog.Tile
		want string
	}{
		{tlog.Tile{L: 0, N: 0, W: 256}, "tile/0/000"},
		{tlog.Tile{L: 0, N: 1234067, W: 256}, "tile/0/x001/x234/067"},
		{tlog.Tile{L: 1, N: 1234067, W: 8}, "tile/1/x001/x234/067.p/8"},
		{tlog.Tile{L: -1, N: 5, W: 256}, "tile/entries/005"},
		{tlog.Tile{L: -1, N: 1000, W: 3}, "tile/entries/x001/000.p/3"},
	} {
		if got := TilePath(c.tile); got != c.want {
			t.Errorf("TilePath(%+v) = %q, want %q", c.tile, got, c.want)
		}
	}
}

func TestBundleRoundTrip(t *testing.T) {
	var b []byte
	for _, l := range []string{"a", "", "ccc"} {
		b = AppendBundle(b, []byte(l))
	}
	got, err := SplitBundle(b)
	if err != nil || len(got) != 3 || string(got[2]) != "ccc" || len(got[1]) != 0 {
		t.Fatalf("SplitBundle = %q, %v", got, err)
	}
	for _, bad := range [][]byte{{0}, {0, 5, 'x'}} {
		if _, err := SplitBundle(bad); err == nil {
			t.Errorf("SplitBundle(%q) accepted", bad)
		}
	}
}
