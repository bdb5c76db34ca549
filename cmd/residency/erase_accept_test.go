package main

import (
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/testenv"
)

// TestEraseAcrossStores is issue 15's erasure acceptance on the dev stack:
// a user with rows in PostgreSQL and in object-store files of two hours
// (file:// and the S3 server), erased with `residency erase`, then a
// redelivery of one of their pinned records and a producer's retry of one
// of their events: afterwards no store holds any of their rows, every
// other user's rows are exactly as they were, the receipt's counts match
// what the stores held, and the sinks counted the refusals. The dry run
// before changes nothing; the receipt names the user only by its hash.
func TestEraseAcrossStores(t *testing.T) {
	s := newErasureStack(t, 2)
	pg := testenv.NewPostgres(t)
	filesURL := "file://" + t.TempDir()
	s3URL := testenv.NewS3(t).URL()
	s.addSink(t, "us-postgres", "us", fmt.Sprintf("postgres: {dsn: %q}", pg.DSN))
	s.addSink(t, "us-files", "us", fmt.Sprintf("objectstore: {url: %q}", filesURL))
	s.addSink(t, "us-s3", "us", fmt.Sprintf("objectstore: {url: %q}", s3URL))
	cfg := s.writeConfig(t, "")
	stores := map[string]erasure.RowStore{"us-postgres": openStore(t, pg.DSN, ""), "us-files": openStore(t, "", filesURL), "us-s3": openStore(t, "", s3URL)}

	// The user's events of two hours ago and of an hour ago, and other
	// users' events of both hours.
	user := "alice-" + testenv.Name(t, "u")
	hour := time.Now().UTC().Truncate(time.Hour)
	var theirs, others []*kgo.Record
	for i := range 6 {
		at := hour.Add(-2*time.Hour + time.Duration(i)*time.Minute)
		if i >= 3 {
			at = hour.Add(-time.Hour + time.Duration(i)*time.Minute)
		}
		theirs = append(theirs, s.record(t, int32(i%2), fmt.Sprintf("alice-%d", i), user, "US", at))
	}
	for i := range 20 {
		at := hour.Add(-2*time.Hour + time.Duration(i)*5*time.Minute)
		others = append(others, s.record(t, int32(i%2), fmt.Sprintf("other-%02d", i), fmt.Sprintf("bob-%d", i%4), "US", at))
	}
	s.produce(t, append(append([]*kgo.Record(nil), theirs...), others...)...)
	router := start(t, "route", "--config", cfg, "--listen", "off")
	sinks := []*bg{router}
	for name := range s.sinks {
		sinks = append(sinks, start(t, "sink", "--config", cfg, "--store", name))
	}
	waitFor(t, 90*time.Second, "every store to hold the 26 events", func() bool {
		for _, st := range stores {
			if len(rows(t, st)) != 26 {
				return false
			}
		}
		return true
	}, sinks...)
	before := map[string]map[string]erasure.Row{}
	for name, st := range stores {
		before[name] = rows(t, st)
		if name == "us-postgres" {
			continue
		}
		hours := map[string]bool{}
		for _, r := range before[name] {
			if r.UserID == user {
				hours[path.Dir(r.Object)] = true
			}
		}
		if len(hours) != 2 {
			t.Fatalf("%s: the user's rows are in %d hour directories (%v), want 2", name, len(hours), hours)
		}
	}
	rdb := goredis.NewClient(&goredis.Options{Addr: s.r.Addr})
	defer rdb.Close()
	markers := redis.NewMarkers(rdb, s.r.Prefix)

	// The dry run counts and lists, and changes nothing.
	code, out, errs := cmd(t, "erase", "--config", cfg, "--user", user, "--dry-run", "--output", "json")
	if code != exitOK {
		t.Fatalf("erase --dry-run: exit %d\n%s%s", code, out, errs)
	}
	var dry erasure.Receipt
	if err := json.Unmarshal([]byte(out), &dry); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !dry.DryRun || dry.Removed != 18 || len(dry.Stores) != 3 {
		t.Fatalf("dry-run receipt %+v", dry)
	}
	if n, err := markers.Len(testenv.Context(t, 5*time.Second)); err != nil || n != 0 {
		t.Fatalf("the dry run recorded %d markers (%v)", n, err)
	}
	for name, st := range stores {
		if got := rows(t, st); len(got) != 26 {
			t.Fatalf("the dry run changed %s: %d rows", name, len(got))
		}
	}

	// The erasure.
	code, out, errs = cmd(t, "erase", "--config", cfg, "--user", user, "--output", "json")
	if code != exitOK {
		t.Fatalf("erase: exit %d\n%s%s", code, out, errs)
	}
	var r erasure.Receipt
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if strings.Contains(out, user) || strings.Contains(errs, user) {
		t.Fatalf("the receipt or the log names the user:\n%s\n%s", out, errs)
	}
	if !r.Complete || r.DryRun || r.MarkedAt.IsZero() || r.Removed != 18 || len(r.Stores) != 3 {
		t.Fatalf("receipt %+v", r)
	}
	for _, sr := range r.Stores {
		var held int64
		for _, row := range before[sr.Store] {
			if row.UserID == user {
				held++
			}
		}
		var passes int64
		for _, p := range sr.Passes {
			passes += p
		}
		if sr.Removed != held || held != 6 || passes != sr.Removed || sr.Remaining != 0 || len(sr.Passes) != 2 || sr.Error != "" {
			t.Errorf("receipt of %s: %+v; the store held %d of the user's rows", sr.Store, sr, held)
		}
	}
	// Where the user's events still sit: the ingest topic and the us
	// pinned topic, 6 each.
	in := map[string]int64{}
	for _, h := range r.Topics {
		in[h.Name] = h.Records
	}
	if in[s.ingest] != 6 || in[s.us] != 6 {
		t.Errorf("topics in the receipt: %+v", r.Topics)
	}

	// A redelivery of one of their pinned records, and a producer's retry
	// of one of their events (routed again): never stored again.
	var pinned *kgo.Record
	for _, rec := range s.a.ReadTopic(t, testenv.Context(t, 30*time.Second), s.us) {
		if string(rec.Key) == "alice-4" {
			pinned = rec
		}
	}
	if pinned == nil {
		t.Fatal("alice-4 is not in the us pinned topic")
	}
	s.produce(t, &kgo.Record{Topic: s.us, Partition: pinned.Partition, Key: pinned.Key, Value: pinned.Value, Headers: pinned.Headers, Timestamp: pinned.Timestamp},
		&kgo.Record{Topic: s.ingest, Partition: theirs[1].Partition, Key: theirs[1].Key, Value: theirs[1].Value, Timestamp: theirs[1].Timestamp})
	waitFor(t, 60*time.Second, "the sinks to read the redeliveries", func() bool {
		if s.lag(t, "a", s.group, s.ingest) != 0 {
			return false
		}
		for _, sp := range s.sinks {
			if s.lag(t, "a", sp.group, s.us) != 0 {
				return false
			}
		}
		return true
	}, sinks...)
	for name, st := range stores {
		after := rows(t, st)
		for id, row := range after {
			if row.UserID == user {
				t.Errorf("%s holds the erased user's %s", name, id)
			}
		}
		for id, row := range before[name] {
			if row.UserID == user {
				continue
			}
			a, ok := after[id]
			a.Object, row.Object = "", ""
			if !ok || fmt.Sprint(a) != fmt.Sprint(row) {
				t.Errorf("%s: another user's row %s changed or went:\n%+v\n%+v", name, id, row, a)
			}
		}
		if len(after) != 20 {
			t.Errorf("%s holds %d rows, want the other users' 20", name, len(after))
		}
	}
	for name, sp := range s.sinks {
		_, m := get(sp.listen, "/metrics")
		if want := fmt.Sprintf(`residency_sink_erased_events_total{store=%q} 2`, name); !strings.Contains(m, want) {
			t.Errorf("sink %s /metrics lacks %s", name, want)
		}
	}
	// The erasure is idempotent: again, nothing to remove.
	if code, out, errs = cmd(t, "erase", "--config", cfg, "--user", user, "--no-topics"); code != exitOK || !strings.Contains(out, "removed 0 rows") {
		t.Fatalf("erase again: exit %d\n%s%s", code, out, errs)
	}
}
