package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/erasure"
)

var t0 = time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)

// ingestFixture: topic "events" with 3 partitions of 10 records each, one a
// minute from t0; the router group committed 6 on partition 0, 0 on
// partition 1, nothing on partition 2.
func ingestFixture() *memKafka {
	k := newMemKafka()
	k.create("events", 3)
	for p := range 3 {
		for i := range 10 {
			k.produce("events", p, "US|u", t0.Add(time.Duration(i)*time.Minute))
		}
	}
	k.commit("router", "events", 0, 6)
	k.commit("router", "events", 1, 0)
	return k
}

func purger(t *testing.T, cfg erasure.PurgeConfig) *erasure.Purger {
	t.Helper()
	p, err := erasure.NewPurger(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func planLine(pp erasure.PartitionPlan) string {
	return fmt.Sprintf("%s/%d:%d-%d:%s", pp.Name, pp.Partition, pp.LogStart, pp.Before, pp.HeldBy)
}

func planLines(p *erasure.PurgePlan) string {
	var s []string
	for _, pp := range p.Partitions {
		s = append(s, planLine(pp))
	}
	return strings.Join(s, " ")
}

// TestPurgeUpToCommitted: never past the router's committed offset; a
// partition never committed is left alone and reported; a dry run changes
// nothing; a run deletes exactly the plan and logs a purge leaf per range
// first.
func TestPurgeUpToCommitted(t *testing.T) {
	k := ingestFixture()
	ledger := &memLedger{}
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a",
		IngestTopics: []string{"events"}, RouterGroup: "router", Ledger: ledger, Actor: "purge-test", Now: func() time.Time { return t0.Add(time.Hour) }})
	ctx := context.Background()

	dry, err := p.Run(ctx, erasure.PurgeOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := planLines(dry); got != "events/0:0-6:committed events/1:0-0:committed events/2:0-0:no_commit" {
		t.Fatalf("plan = %s", got)
	}
	if !dry.DryRun || dry.Records != 6 || len(k.deletes) != 0 || len(ledger.all()) != 0 {
		t.Fatalf("dry run: records %d, deletes %v, leaves %d; want 6 planned and nothing done", dry.Records, k.deletes, len(ledger.all()))
	}
	if c := dry.Partitions[2].Committed; c != nil || !strings.Contains(dry.Partitions[2].Detail, "never committed") {
		t.Fatalf("partition 2: committed %v, detail %q", c, dry.Partitions[2].Detail)
	}
	var text bytes.Buffer
	dry.WriteText(&text)
	if !strings.Contains(text.String(), "would delete 6 offsets") || !strings.Contains(text.String(), "no_commit") {
		t.Fatalf("dry run text:\n%s", text.String())
	}

	plan, err := p.Run(ctx, erasure.PurgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(k.deletes) != "[events/0<6]" || k.logStart("events", 0) != 6 || k.logStart("events", 2) != 0 {
		t.Fatalf("deletes %v; log starts %d, %d", k.deletes, k.logStart("events", 0), k.logStart("events", 2))
	}
	if !plan.Partitions[0].Deleted || plan.Partitions[0].NewLogStart != 6 || plan.Records != 6 || plan.Leaves != 1 {
		t.Fatalf("result %+v", plan.Partitions[0])
	}
	leaves := ledger.all()
	want := audit.Leaf{Kind: audit.KindPurge, Time: t0.Add(time.Hour).UnixMilli(), Actor: "purge-test",
		Src: audit.Source{Cluster: "a", Topic: "events", Partition: 0, Offset: 0, EndOffset: 6}, Decision: audit.Purged, Count: 6}
	if len(leaves) != 1 || fmt.Sprint(leaves[0]) != fmt.Sprint(want) {
		t.Fatalf("leaves %+v, want %+v", leaves, want)
	}
	// Again: nothing new to delete.
	again, err := p.Run(ctx, erasure.PurgeOptions{})
	if err != nil || again.Records != 0 || len(k.deletes) != 1 {
		t.Fatalf("second run: %d records, deletes %v, %v", again.Records, k.deletes, err)
	}
}

// TestPurgeMinAge holds back records younger than the minimum age.
func TestPurgeMinAge(t *testing.T) {
	k := ingestFixture()
	k.commit("router", "events", 1, 10)
	now := t0.Add(10 * time.Minute) // records are 10 to 1 minutes old
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a",
		IngestTopics: []string{"events"}, RouterGroup: "router", Now: func() time.Time { return now }})
	plan, err := p.Plan(context.Background(), erasure.PurgeOptions{MinAge: 7 * time.Minute, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	// Offsets 0-2 are older than 7 minutes (offset 3 is exactly 7 minutes
	// old: it stays): partitions 0 (committed 6) and 1 (committed 10) stop
	// at 3; partition 2 never committed.
	if got := planLines(plan); got != "events/0:0-3:min_age events/1:0-3:min_age events/2:0-0:no_commit" {
		t.Fatalf("plan = %s", got)
	}
	if _, err := p.Plan(context.Background(), erasure.PurgeOptions{MinAge: -time.Second}); !errors.Is(err, erasure.ErrConfig) {
		t.Fatalf("negative min age: %v", err)
	}
}

// sinksFixture: ingest "events" (1 partition, 10 records, all committed);
// the router put even offsets in residency.us (cluster a) and odd ones in
// residency.eu (cluster b), with their source headers.
func sinksFixture() (ing, a, b *memKafka) {
	ing = newMemKafka()
	ing.create("events", 1)
	b = newMemKafka()
	b.create("residency.eu", 1)
	ing.create("residency.us", 1)
	for i := range 10 {
		ing.produce("events", 0, "X|u", t0)
		if i%2 == 0 {
			ing.produce("residency.us", 0, "US|u", t0, src("events", 0, int64(i))...)
		} else {
			b.produce("residency.eu", 0, "DE|u", t0, src("events", 0, int64(i))...)
		}
	}
	// A record without source headers (not from the router) is not an ingest offset.
	b.produce("residency.eu", 0, "DE|u", t0)
	ing.commit("router", "events", 0, 10)
	return ing, ing, b
}

func sinksPurger(t *testing.T, ing, b *memKafka, maxScan int64) *erasure.Purger {
	return purger(t, erasure.PurgeConfig{
		Clusters: map[string]erasure.Cluster{"a": ing.cluster(), "b": b.cluster()}, IngestCluster: "a",
		IngestTopics: []string{"events"}, RouterGroup: "router", MaxScan: maxScan,
		Downstream: []erasure.Downstream{
			{Topic: erasure.Topic{Cluster: "a", Name: "residency.us", Role: erasure.RolePinned, Region: "us"}, Group: "sink-us", Name: "us-postgres"},
			{Topic: erasure.Topic{Cluster: "b", Name: "residency.eu", Role: erasure.RolePinned, Region: "eu"}, Group: "sink-eu", Name: "eu-objectstore"},
			{Topic: erasure.Topic{Cluster: "b", Name: "residency.eu", Role: erasure.RolePinned, Region: "eu"}, Group: "sink-eu2", Name: "eu-postgres"},
		}})
}

// TestPurgeAfterSinks holds each ingest partition at the lowest ingest
// offset some sink has not stored, read from the sinks' unstored tails.
func TestPurgeAfterSinks(t *testing.T) {
	ing, _, b := sinksFixture()
	p := sinksPurger(t, ing, b, 0)
	ctx := context.Background()
	// us stored pinned 0-2 (ingest 0,2,4); eu 0-3 (1,3,5,7) and 0-4.
	ing.commit("sink-us", "residency.us", 0, 3)
	b.commit("sink-eu", "residency.eu", 0, 4)
	b.commit("sink-eu2", "residency.eu", 0, 5)
	plan, err := p.Plan(ctx, erasure.PurgeOptions{AfterSinks: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := planLines(plan); got != "events/0:0-6:sinks" || !strings.Contains(plan.Partitions[0].Detail, "us-postgres") {
		t.Fatalf("plan = %s (%s)", got, plan.Partitions[0].Detail)
	}
	// eu-objectstore falls behind: pinned 1 (ingest 3) not stored.
	b.commit("sink-eu", "residency.eu", 0, 1)
	if plan, err = p.Plan(ctx, erasure.PurgeOptions{AfterSinks: true}); err != nil || planLines(plan) != "events/0:0-3:sinks" {
		t.Fatalf("plan = %s, %v", planLines(plan), err)
	}
	if len(plan.Downstream) != 3 || plan.Downstream[1].Unstored != 5 {
		t.Fatalf("downstream %+v", plan.Downstream)
	}
	// Everything stored: the router's commit is the bound.
	ing.commit("sink-us", "residency.us", 0, 5)
	b.commit("sink-eu", "residency.eu", 0, 6)
	b.commit("sink-eu2", "residency.eu", 0, 6)
	if plan, err = p.Plan(ctx, erasure.PurgeOptions{AfterSinks: true}); err != nil || planLines(plan) != "events/0:0-10:committed" {
		t.Fatalf("plan = %s, %v", planLines(plan), err)
	}
	// A sink group that never committed reads from 0: ingest 1 unstored.
	b.commits["sink-eu2"] = nil
	if plan, err = p.Plan(ctx, erasure.PurgeOptions{AfterSinks: true}); err != nil || planLines(plan) != "events/0:0-1:sinks" {
		t.Fatalf("plan = %s, %v", planLines(plan), err)
	}
}

// TestPurgeAfterSinksUnknown: when the sinks' progress cannot be
// established, nothing is deleted.
func TestPurgeAfterSinksUnknown(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		setup   func(ing, b *memKafka)
		maxScan int64
		want    string
	}{
		{"a tail longer than max scan", func(ing, b *memKafka) {}, 3, "more than the 3"},
		{"a commit below the log start", func(ing, b *memKafka) {
			b.topics["residency.eu"][0].logStart = 3
		}, 0, "below its log start"},
		{"never committed, log no longer from 0", func(ing, b *memKafka) {
			b.topics["residency.eu"][0].logStart = 3
			b.commits["sink-eu"] = nil
		}, 0, "never committed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ing, _, b := sinksFixture()
			ing.commit("sink-us", "residency.us", 0, 0)
			b.commit("sink-eu", "residency.eu", 0, 1)
			b.commit("sink-eu2", "residency.eu", 0, 6)
			c.setup(ing, b)
			p := sinksPurger(t, ing, b, c.maxScan)
			plan, err := p.Run(ctx, erasure.PurgeOptions{AfterSinks: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := planLines(plan); got != "events/0:0-0:sinks_unknown" || !strings.Contains(plan.Partitions[0].Detail, c.want) {
				t.Fatalf("plan = %s (%s); want nothing deleted, detail naming %q", got, plan.Partitions[0].Detail, c.want)
			}
			if len(ing.deletes) != 0 {
				t.Fatalf("deleted %v", ing.deletes)
			}
		})
	}
	// Without sinks in the config --after-sinks is refused.
	k := ingestFixture()
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a", IngestTopics: []string{"events"}, RouterGroup: "router"})
	if _, err := p.Plan(ctx, erasure.PurgeOptions{AfterSinks: true}); !errors.Is(err, erasure.ErrConfig) {
		t.Fatalf("after sinks with no sink: %v", err)
	}
}

// TestPurgeReplayedRanges: quarantine is purged over the ranges finished
// replays moved elsewhere entirely, contiguously from the log start, and
// never where a replay still runs.
func TestPurgeReplayedRanges(t *testing.T) {
	k := newMemKafka()
	k.create("quarantine", 2)
	for range 20 {
		k.produce("quarantine", 0, "|u", t0)
		k.produce("quarantine", 1, "|u", t0)
	}
	q := erasure.Topic{Cluster: "a", Name: "quarantine", Role: erasure.RoleQuarantine}
	run := func(replays erasure.ReplaySource) string {
		t.Helper()
		p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a",
			Replayed: []erasure.Topic{q}, Replays: replays})
		plan, err := p.Plan(context.Background(), erasure.PurgeOptions{DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		return planLines(plan)
	}
	done := func(id string, start, end int64, kept int64, keptFrom map[int]int64) erasure.ReplayState {
		return erasure.ReplayState{ID: id, Topic: "quarantine", Complete: true, Kept: kept, KeptFrom: keptFrom,
			Ranges: []erasure.OffsetRange{{Partition: 0, Start: start, End: end}}}
	}
	if got := run(nil); got != "quarantine/0:0-0:not_replayed quarantine/1:0-0:not_replayed" {
		t.Fatalf("no replay source: %s", got)
	}
	if got := run(memReplays{done("r1", 0, 10, 0, nil), done("r2", 10, 15, 2, nil)}); got != "quarantine/0:0-10:not_replayed quarantine/1:0-0:not_replayed" {
		t.Fatalf("a replay that left events in place: %s", got)
	}
	if got := run(memReplays{done("r1", 0, 10, 0, nil), done("r2", 10, 15, 2, map[int]int64{0: 12})}); got != "quarantine/0:0-12:not_replayed quarantine/1:0-0:not_replayed" {
		t.Fatalf("kept from 12: %s", got)
	}
	// KeptFrom known: a partition it does not name kept nothing there,
	// whatever the replay kept elsewhere.
	if got := run(memReplays{done("r1", 0, 10, 0, nil), done("r2", 10, 15, 2, map[int]int64{1: 3})}); got != "quarantine/0:0-15:not_replayed quarantine/1:0-0:not_replayed" {
		t.Fatalf("kept only in another partition: %s", got)
	}
	if got := run(memReplays{done("r1", 0, 10, 0, nil), done("r2", 10, 15, 0, map[int]int64{})}); got != "quarantine/0:0-15:not_replayed quarantine/1:0-0:not_replayed" {
		t.Fatalf("kept nothing: %s", got)
	}
	if got := run(memReplays{done("r1", 5, 10, 0, nil)}); got != "quarantine/0:0-0:not_replayed quarantine/1:0-0:not_replayed" {
		t.Fatalf("a range not from the log start: %s", got)
	}
	dry := done("dry", 0, 20, 0, nil)
	dry.DryRun = true
	if got := run(memReplays{dry}); got != "quarantine/0:0-0:not_replayed quarantine/1:0-0:not_replayed" {
		t.Fatalf("a dry run moves nothing: %s", got)
	}
	running := erasure.ReplayState{ID: "r3", Topic: "quarantine", Next: map[int]int64{0: 8},
		Ranges: []erasure.OffsetRange{{Partition: 0, Start: 0, End: 20}}}
	if got := run(memReplays{done("r1", 0, 15, 0, nil), running}); got != "quarantine/0:0-8:replay quarantine/1:0-0:not_replayed" {
		t.Fatalf("a running replay: %s", got)
	}
}

// TestPurgeIngestHeldByRunningReplay: a replay of the ingest topic still
// reading holds it.
func TestPurgeIngestHeldByRunningReplay(t *testing.T) {
	k := ingestFixture()
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a",
		IngestTopics: []string{"events"}, RouterGroup: "router",
		Replays: memReplays{{ID: "r", Topic: "events", Ranges: []erasure.OffsetRange{{Partition: 0, Start: 2, End: 9}}, Next: map[int]int64{0: 4}}}})
	plan, err := p.Plan(context.Background(), erasure.PurgeOptions{DryRun: true})
	if err != nil || planLine(plan.Partitions[0]) != "events/0:0-4:replay" {
		t.Fatalf("plan = %s, %v", planLines(plan), err)
	}
}

// TestPurgeExecuteRechecksCommitted: between plan and run the committed
// offset moved back (an operator reset it): the run deletes only up to it.
func TestPurgeExecuteRechecksCommitted(t *testing.T) {
	k := ingestFixture()
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a", IngestTopics: []string{"events"}, RouterGroup: "router"})
	ctx := context.Background()
	plan, err := p.Plan(ctx, erasure.PurgeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k.commit("router", "events", 0, 3)
	if err := p.Execute(ctx, plan); err != nil {
		t.Fatal(err)
	}
	if k.logStart("events", 0) != 3 || plan.Records != 3 || !strings.Contains(plan.Partitions[0].Detail, "moved back") {
		t.Fatalf("log start %d, records %d, %q", k.logStart("events", 0), plan.Records, plan.Partitions[0].Detail)
	}
}

// TestPurgeFailures: a ledger that fails deletes nothing; a failed delete
// is incomplete and says where.
func TestPurgeFailures(t *testing.T) {
	ctx := context.Background()
	k := ingestFixture()
	ledger := &memLedger{fail: errors.New("audit topic down")}
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a",
		IngestTopics: []string{"events"}, RouterGroup: "router", Ledger: ledger})
	if _, err := p.Run(ctx, erasure.PurgeOptions{}); err == nil || len(k.deletes) != 0 || k.logStart("events", 0) != 0 {
		t.Fatalf("ledger down: %v, deletes %v", err, k.deletes)
	}
	ledger.fail = nil
	k.failDel = errors.New("broker says no")
	plan, err := p.Run(ctx, erasure.PurgeOptions{})
	if !errors.Is(err, erasure.ErrIncomplete) || plan.Partitions[0].Deleted || !strings.Contains(plan.Partitions[0].Error, "broker says no") || plan.Records != 0 {
		t.Fatalf("delete failed: %v, %+v", err, plan.Partitions[0])
	}
	// Bad config names what is missing.
	for _, cfg := range []erasure.PurgeConfig{
		{IngestCluster: "a"},
		{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a", IngestTopics: []string{"events"}},
		{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a", Replayed: []erasure.Topic{{Cluster: "b", Name: "q"}}},
		{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a", Downstream: []erasure.Downstream{{Topic: erasure.Topic{Cluster: "z", Name: "t"}, Group: "g", Name: "s"}}},
	} {
		if _, err := erasure.NewPurger(cfg); !errors.Is(err, erasure.ErrConfig) {
			t.Errorf("NewPurger(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}

// TestPurgeLoop runs a purge on an interval, records metrics, survives a
// failing run and stops cleanly with its context.
func TestPurgeLoop(t *testing.T) {
	k := ingestFixture()
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": k.cluster()}, IngestCluster: "a", IngestTopics: []string{"events"}, RouterGroup: "router"})
	reg := prometheus.NewRegistry()
	m := erasure.NewPurgeMetrics(reg)
	ctx, cancel := context.WithCancel(context.Background())
	runs := 0
	done := make(chan error, 1)
	var loop *erasure.PurgeLoop
	var err error
	loop, err = erasure.NewPurgeLoop(p, erasure.PurgeLoopConfig{Every: 5 * time.Millisecond, Metrics: m, Report: func(_ *erasure.PurgePlan, err error) {
		runs++
		if ready := loop.Ready(); (err == nil) != (ready == nil) || (ready != nil && !errors.Is(ready, erasure.ErrNotReady)) {
			t.Errorf("run %d: error %v, Ready %v", runs, err, ready)
		}
		switch runs {
		case 1:
			k.mu.Lock()
			k.failDel = errors.New("broker down")
			k.mu.Unlock()
			k.commit("router", "events", 0, 8)
		case 2:
			k.mu.Lock()
			k.failDel = nil
			k.mu.Unlock()
		case 3:
			cancel()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := loop.Ready(); !errors.Is(err, erasure.ErrNotReady) {
		t.Errorf("Ready before the first run = %v", err)
	}
	go func() {
		done <- loop.Run(ctx)
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not stop")
	}
	if k.logStart("events", 0) != 8 {
		t.Fatalf("log start %d, want 8 after the failed run was made up", k.logStart("events", 0))
	}
	runsWant := `
# HELP residency_purge_runs_total Purge runs, by result (ok, incomplete, error).
# TYPE residency_purge_runs_total counter
residency_purge_runs_total{result="incomplete"} 1
residency_purge_runs_total{result="ok"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(runsWant), "residency_purge_runs_total"); err != nil {
		t.Error(err)
	}
	out, err := testutil.CollectAndLint(reg)
	if err != nil || len(out) != 0 {
		t.Errorf("lint: %v %v", out, err)
	}
	if n, err := testutil.GatherAndCount(reg, "residency_purge_deleted_records_total"); err != nil || n != 1 {
		t.Errorf("deleted series %d, %v", n, err)
	}
	expected := `
# HELP residency_purge_deleted_records_total Offsets deleted from topics by purge.
# TYPE residency_purge_deleted_records_total counter
residency_purge_deleted_records_total{role="ingest",topic="events"} 8
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(expected), "residency_purge_deleted_records_total"); err != nil {
		t.Error(err)
	}
	if _, err := erasure.NewPurgeLoop(p, erasure.PurgeLoopConfig{}); !errors.Is(err, erasure.ErrConfig) {
		t.Errorf("a zero interval: %v", err)
	}
}

// TestPurgePinnedTopics: with Pinned, a pinned topic is trimmed up to the
// lowest offset every sink draining it committed (each stored everything
// below); a partition a sink never committed is left alone; commits that
// moved back since the plan are honoured; no sink: refused.
func TestPurgePinnedTopics(t *testing.T) {
	a, b := newMemKafka(), newMemKafka()
	a.create("events", 1)
	b.create("residency.eu", 3)
	for p := range 3 {
		for range 10 {
			b.produce("residency.eu", p, "DE|u", t0)
		}
	}
	eu := erasure.Topic{Cluster: "b", Name: "residency.eu", Role: erasure.RolePinned, Region: "eu"}
	b.commit("sink-pg", "residency.eu", 0, 7)
	b.commit("sink-files", "residency.eu", 0, 4)
	b.commit("sink-pg", "residency.eu", 1, 10)
	b.commit("sink-files", "residency.eu", 1, 10)
	b.commit("sink-pg", "residency.eu", 2, 5) // sink-files never committed partition 2
	ledger := &memLedger{}
	p := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": a.cluster(), "b": b.cluster()}, IngestCluster: "a",
		Downstream: []erasure.Downstream{{Topic: eu, Group: "sink-pg", Name: "eu-postgres"}, {Topic: eu, Group: "sink-files", Name: "eu-files"}},
		Ledger:     ledger})
	ctx := context.Background()
	plan, err := p.Plan(ctx, erasure.PurgeOptions{DryRun: true})
	if err != nil || len(plan.Partitions) != 0 {
		t.Fatalf("without Pinned: %s, %v", planLines(plan), err)
	}
	plan, err = p.Plan(ctx, erasure.PurgeOptions{Pinned: true, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := planLines(plan); got != "residency.eu/0:0-4:committed residency.eu/1:0-10:committed residency.eu/2:0-0:no_commit" {
		t.Fatalf("plan = %s", got)
	}
	if d := plan.Partitions[0].Detail; !strings.Contains(d, "eu-files") {
		t.Errorf("partition 0 detail %q does not name the sink holding it", d)
	}
	if d := plan.Partitions[2].Detail; !strings.Contains(d, "eu-files") || !strings.Contains(d, "never committed") {
		t.Errorf("partition 2 detail %q", d)
	}
	plan, err = p.Plan(ctx, erasure.PurgeOptions{Pinned: true})
	if err != nil {
		t.Fatal(err)
	}
	b.commit("sink-files", "residency.eu", 1, 8) // an operator reset it since the plan
	if err := p.Execute(ctx, plan); err != nil {
		t.Fatal(err)
	}
	if b.logStart("residency.eu", 0) != 4 || b.logStart("residency.eu", 1) != 8 || b.logStart("residency.eu", 2) != 0 {
		t.Fatalf("log starts %d %d %d, want 4 8 0", b.logStart("residency.eu", 0), b.logStart("residency.eu", 1), b.logStart("residency.eu", 2))
	}
	if n := len(ledger.all()); n != 2 || plan.Records != 12 {
		t.Fatalf("%d leaves, %d records; want 2 and 12", n, plan.Records)
	}
	noSinks := purger(t, erasure.PurgeConfig{Clusters: map[string]erasure.Cluster{"a": a.cluster()}, IngestCluster: "a"})
	if _, err := noSinks.Plan(ctx, erasure.PurgeOptions{Pinned: true}); !errors.Is(err, erasure.ErrConfig) {
		t.Fatalf("Pinned without sinks: %v", err)
	}
}
