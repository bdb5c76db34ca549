package replay_test

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/replay"
	"github.com/residency-router/residency/schemas"
)

// TestCheckpointSaysWhereEventsWereKept: a finished replay's checkpoint
// says, per partition, the offset of the first event it left in place
// (still unplaceable, filtered out, refused by the loop guard), so that a
// purge can free the quarantine below it; a replay that kept nothing
// says so (an empty map); a checkpoint written before the field existed
// loads without it (nil: unknown).
func TestCheckpointSaysWhereEventsWereKept(t *testing.T) {
	e := newEnv(t)
	e.apply(t, rulesV1)
	vals := map[string][]byte{}
	for i := range 12 {
		vals[fmt.Sprintf("ca-%d", i)] = e.event(t, eventID("0ca0", i), fmt.Sprintf("ca-%d", i), "CA")
	}
	for i := range 3 {
		vals[fmt.Sprintf("nc-%d", i)] = e.event(t, eventID("0000", i), fmt.Sprintf("nc-%d", i), "")
	}
	e.produce(t, vals)
	fx := fields(t, schemas.ExtractorConfig{})
	e.route(t, fx)
	v2 := e.apply(t, rulesV2)

	// Where the events that stay (no country: still unplaceable) are.
	want := map[int]int64{}
	for _, m := range e.readAll(t, "a", e.quarantine) {
		if header(m, router.HeaderReason) != "no_country" {
			continue
		}
		if o, ok := want[m.Partition]; !ok || m.Offset < o {
			want[m.Partition] = m.Offset
		}
	}
	if len(want) == 0 {
		t.Fatal("no event quarantined for no_country")
	}
	dir := t.TempDir()
	cps, err := replay.NewFileCheckpoints(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := e.config(e.plan(t, "kept-1", replay.SourceQuarantine, e.quarantine), v2, fx)
	cfg.Checkpoints = cps
	if rep := run(t, cfg); rep.Stayed != 3 || !rep.Complete {
		t.Fatalf("report: %+v", rep)
	}
	cp, err := cps.Load(testenv.Context(t, 10*time.Second), "kept-1")
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(cp.KeptFrom, want) {
		t.Fatalf("checkpoint kept_from = %v, want %v (the first no_country event of each partition)", cp.KeptFrom, want)
	}

	// A filter keeps what it leaves out: only the unknown_country events
	// are replayed (again, --again), the no_country ones are filtered out.
	cfg = e.config(e.plan(t, "kept-2", replay.SourceQuarantine, e.quarantine), v2, fx)
	cfg.Plan.Filter.Reasons = []string{"unknown_country"}
	cfg.Plan.Again = true
	cfg.Checkpoints = cps
	if rep := run(t, cfg); rep.Filtered != 3 {
		t.Fatalf("filtered report: %+v", rep)
	}
	if cp, err = cps.Load(testenv.Context(t, 10*time.Second), "kept-2"); err != nil || !maps.Equal(cp.KeptFrom, want) {
		t.Fatalf("filtered: kept_from = %v (%v), want %v", cp.KeptFrom, err, want)
	}

	// A replay that moved everything it read keeps nothing: the
	// unknown_country events of partition 0 only, below the first kept one.
	if part0, ok := want[0]; ok && part0 > 0 {
		cfg = e.config(replay.Plan{ID: "kept-3", Source: replay.SourceQuarantine, Topic: e.quarantine,
			Ranges: []replay.Range{{Partition: 0, Start: 0, End: part0}}, Again: true}, v2, fx)
		cfg.Checkpoints = cps
		run(t, cfg)
		if cp, err = cps.Load(testenv.Context(t, 10*time.Second), "kept-3"); err != nil || cp.KeptFrom == nil || len(cp.KeptFrom) != 0 {
			t.Fatalf("nothing kept: kept_from = %#v (%v), want an empty map", cp.KeptFrom, err)
		}
	}

	// A checkpoint of an earlier version has no kept_from: nil, unknown.
	b, err := os.ReadFile(cps.Path("kept-1"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "kept_from")
	b, _ = json.Marshal(doc)
	if err := os.WriteFile(cps.Path("old"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if cp, err = cps.Load(testenv.Context(t, 10*time.Second), "old"); err != nil || cp.KeptFrom != nil || !cp.Report.Complete {
		t.Fatalf("old checkpoint: %#v, %v", cp, err)
	}
}
