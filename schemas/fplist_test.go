package schemas

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestByFingerprintMatchesMap checks that the lists of fingerprints an
// Extractor scans (at most maxListedFPs) find exactly what its map holds,
// with the embedded schemas alone and with a catalogue too large for the
// lists.
func TestByFingerprintMatchesMap(t *testing.T) {
	small, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if small.fps == nil {
		t.Fatalf("the embedded schemas' %d fingerprints are not listed", len(small.byFP))
	}
	dir := t.TempDir()
	for i := range maxListedFPs + 1 {
		text := fmt.Sprintf(`{"type":"record","name":"R%d","fields":[{"name":"country","type":"string"},{"name":"user_id","type":"string"}]}`, i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprint("r", i, ".avsc")), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	large, err := NewExtractor(ExtractorConfig{CatalogueDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if large.fps != nil {
		t.Fatalf("%d fingerprints are listed; at most %d should be", len(large.fps), maxListedFPs)
	}
	r := rand.New(rand.NewPCG(9, 10))
	for _, e := range []*Extractor{small, large} {
		for fp, want := range e.byFP {
			if w, ok := e.byFingerprint(fp); !ok || w != want {
				t.Fatalf("fingerprint %016x: got %v, %v; want its writer", fp, w, ok)
			}
		}
		for range 1000 {
			fp := r.Uint64()
			want, wantOK := e.byFP[fp]
			if w, ok := e.byFingerprint(fp); ok != wantOK || w != want {
				t.Fatalf("fingerprint %016x: got %v, %v; the map has %v, %v", fp, w, ok, want, wantOK)
			}
		}
	}
}
