package bench

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/residency-router/residency/schemas"
)

// TestPoolEventsDiffer: the pool's events are valid, each has an event id
// of its own, users that pins may name keep their id (key and value
// alike), and the others get fresh users consistently in key and value;
// the samples themselves are never written to.
func TestPoolEventsDiffer(t *testing.T) {
	p, err := newBenchPool(7, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	before := make([][]byte, 0)
	for _, k := range p.kinds {
		for _, v := range k.values {
			before = append(before, bytes.Clone(v))
		}
	}
	ex, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pinList := map[string]bool{}
	for _, u := range p.pinList {
		pinList[u] = true
	}
	rng := rand.New(rand.NewPCG(1, 2))
	values := map[string]bool{}
	users := map[string]bool{}
	const n = 20_000
	var wellFormed, pinnedKept, fresh int
	for range n {
		m := p.next(rng, "ingest")
		kind := p.lastKind
		if values[string(m.Value)] && !strings.HasPrefix(kind, "malformed") {
			t.Fatalf("a %s event repeats an earlier one", kind)
		}
		values[string(m.Value)] = true
		f, err := ex.Extract(context.Background(), "ingest", m.Value)
		if strings.HasPrefix(kind, "malformed") {
			if err == nil {
				t.Fatalf("a %s event decodes", kind)
			}
			continue
		}
		if err != nil {
			t.Fatalf("a %s event does not decode: %v", kind, err)
		}
		wellFormed++
		if !bytes.Equal(f.UserID, m.Key) {
			t.Fatalf("%s: key %q, user_id %q", kind, m.Key, f.UserID)
		}
		if !bytes.Contains(m.Value, append([]byte("s-"), m.Key...)) || !bytes.Contains(m.Value, append([]byte("d-"), m.Key...)) {
			t.Fatalf("%s: session or device id does not follow the user %q", kind, m.Key)
		}
		if pinList[string(m.Key)] {
			pinnedKept++
		} else {
			fresh++
		}
		users[string(m.Key)] = true
	}
	if pinnedKept == 0 || fresh < wellFormed/2 || len(users) < fresh*9/10 {
		t.Fatalf("%d well-formed events: %d of pin-list users, %d of fresh users, %d distinct users", wellFormed, pinnedKept, fresh, len(users))
	}
	i := 0
	for _, k := range p.kinds {
		for _, v := range k.values {
			if !bytes.Equal(v, before[i]) {
				t.Fatalf("next wrote into sample %d of %s", i, k.name)
			}
			i++
		}
	}
}
