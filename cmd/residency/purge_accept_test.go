package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
)

// TestPurgeWhileRouting is issue 15's purge acceptance on the dev stack:
// with two routers and the sinks running and events flowing, the purge
// runs as a service every 300ms and as one-shot commands at the same time;
// every event id still reaches its destination (a region's pinned topic,
// or quarantine), and afterwards the ingest topic's start offsets equal
// the router group's committed offsets. A partition the group never
// committed keeps everything. With --after-sinks and one sink stopped, the
// start offsets stop at the sinks' progress exactly; --dry-run changes
// nothing.
func TestPurgeWhileRouting(t *testing.T) {
	s := newErasureStack(t, 3)
	pg := testenv.NewPostgres(t)
	s.addSink(t, "us-postgres", "us", fmt.Sprintf("postgres: {dsn: %q}", pg.DSN))
	s.addSink(t, "eu-files", "eu", fmt.Sprintf("objectstore: {url: %q}", "file://"+t.TempDir()))
	cfg := s.writeConfig(t, "")
	purgeAddr := freeAddr(t)

	r1 := start(t, "route", "--config", cfg, "--listen", "off")
	r2 := start(t, "route", "--config", cfg, "--listen", "off")
	usSink := start(t, "sink", "--config", cfg, "--store", "us-postgres")
	euSink := start(t, "sink", "--config", cfg, "--store", "eu-files")
	service := start(t, "purge", "--config", cfg, "--every", "300ms", "--listen", purgeAddr, "--log-level", "info")
	running := []*bg{r1, r2, usSink, euSink, service}

	// Events flow into partitions 0 and 1 (partition 2 stays empty: the
	// group never commits it), while one-shot purges run too.
	countries := []string{"US", "DE", "US", "FR", "ZZ"} // ZZ: no rule, quarantined
	var ids []string
	produce := func(prefix string, n int, parts ...int32) {
		for i := range n {
			id := fmt.Sprintf("%s-%04d", prefix, i)
			ids = append(ids, id)
			s.produce(t, s.record(t, parts[i%len(parts)], id, "user-"+strconv.Itoa(i%7), countries[i%len(countries)], time.Now()))
		}
	}
	var wg sync.WaitGroup
	oneShots := make(chan string, 3)
	wg.Go(func() {
		for range 3 {
			time.Sleep(700 * time.Millisecond)
			code, out, errs := cmd(t, "purge", "--config", cfg)
			if code != exitOK {
				oneShots <- fmt.Sprintf("exit %d: %s%s", code, out, errs)
			}
		}
	})
	for b := range 15 {
		produce(fmt.Sprintf("flow%02d", b), 20, 0, 1)
		time.Sleep(150 * time.Millisecond)
	}
	wg.Wait()
	close(oneShots)
	for msg := range oneShots {
		t.Errorf("a one-shot purge during the flow: %s", msg)
	}
	routed := func() bool {
		_, high := s.watermarks(t, "a", s.ingest)
		c := s.committed(t, "a", s.group, s.ingest)
		var n int64
		for p, h := range high {
			if got, ok := c[p]; h > 0 && (!ok || got != h) {
				return false
			}
			n += h
		}
		return n == int64(len(ids))
	}
	waitFor(t, 60*time.Second, "every event routed", routed, running...)
	reached := func() map[string]int {
		got := s.keys(t, "a", s.us)
		maps.Copy(got, s.keys(t, "b", s.eu))
		maps.Copy(got, s.keys(t, "a", s.quarantine))
		return got
	}
	got := reached()
	for _, id := range ids {
		if got[id] == 0 {
			t.Errorf("event %s never reached its destination", id)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// The service purged while events flowed; its metrics and health say so.
	waitFor(t, 20*time.Second, "the service to purge up to the commits", func() bool {
		low, _ := s.watermarks(t, "a", s.ingest)
		c := s.committed(t, "a", s.group, s.ingest)
		return low[0] == c[0] && low[1] == c[1]
	}, running...)
	if code, body := get(purgeAddr, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz = %d %s", code, body)
	}
	if code, _ := get(purgeAddr, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d", code)
	}
	_, metrics := get(purgeAddr, "/metrics")
	for _, want := range []string{`residency_purge_runs_total{result="ok"}`, `residency_purge_deleted_records_total{role="ingest",topic="` + s.ingest + `"}`,
		`residency_purge_held_partitions{held_by="no_commit",topic="` + s.ingest + `"} 1`, "residency_purge_last_success_timestamp_seconds"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code := service.halt(t); code != exitOK {
		t.Fatalf("the purge service exited %d on shutdown; stderr:\n%s", code, service.stderr.String())
	}
	if !strings.Contains(service.stderr.String(), "purge stopped cleanly") {
		t.Errorf("no clean-stop log line:\n%s", service.stderr.String())
	}

	// A group with no commit on a partition: nothing deleted there.
	if _, ok := s.committed(t, "a", s.group, s.ingest)[2]; ok {
		t.Fatal("the router group committed partition 2, which never held an event")
	}
	r1.halt(t)
	r2.halt(t)
	produce("late", 5, 2)
	code, out, errs := cmd(t, "purge", "--config", cfg, "--output", "json")
	if code != exitOK {
		t.Fatalf("purge: exit %d\n%s%s", code, out, errs)
	}
	var plan erasure.PurgePlan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	for _, pp := range plan.Partitions {
		if pp.Role == erasure.RoleIngest && pp.Partition == 2 && (pp.HeldBy != erasure.HoldNoCommit || pp.Records != 0) {
			t.Errorf("partition 2: %+v", pp)
		}
	}
	if low, high := s.watermarks(t, "a", s.ingest); low[2] != 0 || high[2] != 5 {
		t.Fatalf("partition 2 after purge: log start %d, high water %d; want 0 and 5", low[2], high[2])
	}
	// Routed later, they are purged like the rest.
	r1 = start(t, "route", "--config", cfg, "--listen", "off")
	running = []*bg{r1, usSink, euSink}
	waitFor(t, 60*time.Second, "partition 2 routed", func() bool { return s.committed(t, "a", s.group, s.ingest)[2] == 5 }, running...)
	if code, out, errs = cmd(t, "purge", "--config", cfg); code != exitOK {
		t.Fatalf("purge: exit %d\n%s%s", code, out, errs)
	}
	low, _ := s.watermarks(t, "a", s.ingest)
	if c := s.committed(t, "a", s.group, s.ingest); !maps.Equal(low, c) {
		t.Fatalf("start offsets %v, committed %v: want equal", low, c)
	}
	got = reached()
	for _, id := range ids {
		if got[id] == 0 {
			t.Errorf("event %s never reached its destination", id)
		}
	}

	// --after-sinks: the eu sink stops; the ingest topic is then purged
	// only up to the first event it has not stored, per partition.
	waitFor(t, 60*time.Second, "the sinks to store everything", func() bool {
		return s.lag(t, "a", s.sinks["us-postgres"].group, s.us) == 0 && s.lag(t, "b", s.sinks["eu-files"].group, s.eu) == 0
	}, running...)
	euSink.halt(t)
	produce("held", 30, 0, 1)
	waitFor(t, 60*time.Second, "the new events routed and stored in us", func() bool {
		return routed() && s.lag(t, "a", s.sinks["us-postgres"].group, s.us) == 0
	}, r1, usSink)
	// The ingest offsets the eu sink has not stored: its unstored tail.
	euCommitted := s.committed(t, "b", s.sinks["eu-files"].group, s.eu)
	unstored := map[int]int64{}
	for _, r := range s.b.ReadTopic(t, testenv.Context(t, 30*time.Second), s.eu) {
		if r.Offset < euCommitted[int(r.Partition)] {
			continue
		}
		var part, off int64 = -1, -1
		for _, h := range r.Headers {
			switch h.Key {
			case router.HeaderSourcePartition:
				part, _ = strconv.ParseInt(string(h.Value), 10, 64)
			case router.HeaderSourceOffset:
				off, _ = strconv.ParseInt(string(h.Value), 10, 64)
			}
		}
		if o, ok := unstored[int(part)]; !ok || off < o {
			unstored[int(part)] = off
		}
	}
	if len(unstored) == 0 {
		t.Fatal("the stopped eu sink has nothing unstored")
	}
	c := s.committed(t, "a", s.group, s.ingest)
	want := maps.Clone(c)
	for p, o := range unstored {
		want[p] = min(want[p], o)
	}
	before, _ := s.watermarks(t, "a", s.ingest)
	if code, out, errs = cmd(t, "purge", "--config", cfg, "--after-sinks", "--dry-run"); code != exitOK || !strings.Contains(out, "would delete") {
		t.Fatalf("dry run: exit %d\n%s%s", code, out, errs)
	}
	if after, _ := s.watermarks(t, "a", s.ingest); !maps.Equal(before, after) {
		t.Fatalf("--dry-run moved the start offsets %v → %v", before, after)
	}
	if code, out, errs = cmd(t, "purge", "--config", cfg, "--after-sinks"); code != exitOK || !strings.Contains(out, "sinks (") {
		t.Fatalf("purge --after-sinks: exit %d\n%s%s", code, out, errs)
	}
	if low, _ := s.watermarks(t, "a", s.ingest); !maps.Equal(low, want) {
		t.Fatalf("start offsets after --after-sinks %v, want %v (committed %v, eu sink's first unstored %v)", low, want, c, unstored)
	}
	// The sink catches up: the rest goes.
	euSink = start(t, "sink", "--config", cfg, "--store", "eu-files")
	waitFor(t, 60*time.Second, "the eu sink to catch up", func() bool { return s.lag(t, "b", s.sinks["eu-files"].group, s.eu) == 0 }, r1, usSink, euSink)
	if code, out, errs = cmd(t, "purge", "--config", cfg, "--after-sinks"); code != exitOK {
		t.Fatalf("purge --after-sinks: exit %d\n%s%s", code, out, errs)
	}
	if low, _ := s.watermarks(t, "a", s.ingest); !maps.Equal(low, s.committed(t, "a", s.group, s.ingest)) {
		t.Fatalf("start offsets %v after the sinks caught up, committed %v", low, s.committed(t, "a", s.group, s.ingest))
	}
	got = reached()
	for _, id := range ids {
		if got[id] == 0 {
			t.Errorf("event %s never reached its destination", id)
		}
	}
}

// TestPurgeQuarantineAfterReplay: a quarantine replay that moved some
// events and left the still unplaceable ones in place frees the
// quarantine up to the first event it kept, as its checkpoint says
// (kept_from); nothing the replay kept is deleted.
func TestPurgeQuarantineAfterReplay(t *testing.T) {
	s := newErasureStack(t, 1)
	cfg := s.writeConfig(t, "")
	// Canada is unknown to the ruleset in force: quarantined; events
	// without a country stay unplaceable under any ruleset.
	var recs []*kgo.Record
	for i := range 12 {
		country := "CA"
		if i == 5 || i == 9 {
			country = ""
		}
		recs = append(recs, s.record(t, 0, fmt.Sprintf("q-%02d", i), fmt.Sprintf("u-%d", i), country, time.Now()))
	}
	s.produce(t, recs...)
	r := start(t, "route", "--config", cfg, "--listen", "off")
	waitFor(t, 60*time.Second, "routing", func() bool {
		_, high := s.watermarks(t, "a", s.quarantine)
		return s.lag(t, "a", s.group, s.ingest) == 0 && high[0] == 12
	}, r)
	// The first event that stays: the first no_country one in quarantine.
	var keptFrom int64 = -1
	for _, rec := range s.a.ReadTopic(t, testenv.Context(t, 30*time.Second), s.quarantine) {
		for _, h := range rec.Headers {
			if h.Key == router.HeaderReason && string(h.Value) == "no_country" && keptFrom < 0 {
				keptFrom = rec.Offset
			}
		}
	}
	if keptFrom <= 0 {
		t.Fatalf("first no_country event at %d", keptFrom)
	}
	// Before any replay, nothing of the quarantine goes.
	if code, out, errs := cmd(t, "purge", "--config", cfg, "--topic", s.quarantine); code != exitOK || !strings.Contains(out, "not_replayed") {
		t.Fatalf("purge before the replay: exit %d\n%s%s", code, out, errs)
	}
	if low, _ := s.watermarks(t, "a", s.quarantine); low[0] != 0 {
		t.Fatalf("the quarantine was purged before any replay: log start %d", low[0])
	}
	ctx := testenv.Context(t, 10*time.Second)
	cur, _ := s.rulesDB.LatestVersion(ctx)
	v2 := strings.Replace(fmt.Sprintf(erasureRules, s.us, s.eu), "countries: [US]", "countries: [US, CA]", 1)
	if _, err := s.rulesDB.Apply(ctx, []byte(v2), rules.ApplyOptions{Base: cur, Author: "test"}); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := cmd(t, "replay", "--config", cfg, "--source", "quarantine", "--progress", "off"); code != exitOK || !strings.Contains(out, "10") {
		t.Fatalf("replay: exit %d\n%s%s", code, out, errs)
	}
	if code, out, errs := cmd(t, "purge", "--config", cfg); code != exitOK {
		t.Fatalf("purge: exit %d\n%s%s", code, out, errs)
	}
	low, high := s.watermarks(t, "a", s.quarantine)
	if low[0] != keptFrom || high[0] != 12 {
		t.Fatalf("quarantine after purge: log start %d (high water %d), want %d: the first event the replay kept", low[0], high[0], keptFrom)
	}
	left := s.keys(t, "a", s.quarantine)
	for _, id := range []string{"q-05", "q-09"} {
		if left[id] != 1 {
			t.Errorf("the kept event %s is gone from the quarantine (left: %v)", id, left)
		}
	}
}
