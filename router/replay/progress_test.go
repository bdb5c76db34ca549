package replay

import (
	"strings"
	"testing"
	"time"
)

func TestProgressBar(t *testing.T) {
	p := Progress{Done: 50, Total: 200, Written: 40, Refused: 2, Rate: 25, ETA: 6 * time.Second}
	got := progressBar(p, 20)
	want := "[====>               ] 50/200 (25%) written 40 refused 2  25 ev/s  ETA 6s "
	if got != want {
		t.Fatalf("progressBar = %q, want %q", got, want)
	}
	var buf strings.Builder
	v := NewProgressView(&buf, "auto", "r-1") // not a terminal: lines
	v.Update(p)
	v.Update(p) // within 5s: no second line
	v.Finish()
	if n := strings.Count(buf.String(), "replay r-1: 50/200 (25%)"); n != 2 {
		t.Fatalf("progress lines:\n%s", buf.String())
	}
}

// TestParseOffsets: per-partition offsets are read against the topic's
// bounds, cut to what the topic holds, and bad ones are refused.
func TestParseOffsets(t *testing.T) {
	bounds := []Range{{Partition: 0, Start: 10, End: 100}, {Partition: 1, Start: 0, End: 50}}
	got, err := ParseOffsets("0:20-30, 1:-", bounds)
	if err != nil || len(got) != 2 || got[0] != (Range{0, 20, 30}) || got[1] != (Range{1, 0, 50}) {
		t.Fatalf("ParseOffsets = %v, %v", got, err)
	}
	if got, err := ParseOffsets("0:0-500", bounds); err != nil || got[0] != (Range{0, 10, 100}) {
		t.Fatalf("ParseOffsets beyond the bounds = %v, %v; want them cut to [10, 100)", got, err)
	}
	for _, bad := range []string{"", "0", "0:5", "2:1-2", "0:1-2,0:3-4", "0:9-3", "x:1-2"} {
		if _, err := ParseOffsets(bad, bounds); err == nil {
			t.Errorf("ParseOffsets(%q) = nil error", bad)
		}
	}
}
