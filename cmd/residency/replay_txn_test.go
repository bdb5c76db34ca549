package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/replay"
)

// TestReplayCommandTransactionalIngest: replaying an ingest range written
// by a transactional producer plans and writes no transaction marker
// (kafka-go's reader handed the markers over as records: a dry run planned
// to dead-letter each as bad_magic, and a real run wrote them to the
// dead-letter topic); read_committed (kafka.isolation_level, which replay
// used to refuse) it replays the committed records only, as the router
// routes them, read_uncommitted the aborted ones too.
func TestReplayCommandTransactionalIngest(t *testing.T) {
	for _, level := range []string{"read_uncommitted", "read_committed"} {
		t.Run(level, func(t *testing.T) {
			s := newReplayStack(t)
			ctx := testenv.Context(t, 90*time.Second)
			setIsolationLevel(t, s.cfgFile, level)
			s.apply(t, "US")
			a := testenv.KafkaA(t)
			txn := a.Franz(t, kgo.TransactionalID(testenv.Name(t, "txn")), kgo.RecordPartitioner(kgo.ManualPartitioner()))
			n := 0
			inTxn := func(commit bool, countries ...string) {
				t.Helper()
				if err := txn.BeginTransaction(); err != nil {
					t.Fatal(err)
				}
				for _, c := range countries {
					n++
					v, err := s.enc.Encode(sample.Event{ID: fmt.Sprintf("ev-%d", n), UserID: fmt.Sprintf("u-%d", n), Country: c})
					if err != nil {
						t.Fatal(err)
					}
					if err := txn.ProduceSync(ctx, &kgo.Record{Topic: s.ingest, Partition: 0, Key: fmt.Appendf(nil, "u-%d", n), Value: v}).FirstErr(); err != nil {
						t.Fatal(err)
					}
				}
				if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
					t.Fatal(err)
				}
			}
			inTxn(true, "US", "DE")
			inTxn(false, "US")
			inTxn(true, "US")
			// 4 data records and 3 markers on partition 0.
			wantRead, wantUS := int64(4), int64(3)
			if level == "read_committed" {
				wantRead, wantUS = 3, 2
			}
			check := func(what, stdout string) replay.Report {
				t.Helper()
				var rep replay.Report
				if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
					t.Fatalf("%s: %v\n%s", what, err, stdout)
				}
				if len(rep.DeadLettered) != 0 || rep.Read != wantRead || rep.Routed["us"] != wantUS || rep.Routed["eu"] != 1 || !rep.Complete {
					t.Fatalf("%s: read %d (want %d), routed %v (want us %d, eu 1), dead-lettered %v (want none), complete %v\n%s",
						what, rep.Read, wantRead, rep.Routed, wantUS, rep.DeadLettered, rep.Complete, stdout)
				}
				return rep
			}
			before := s.ends(t)
			code, stdout, stderr := replayCmd(ctx, "--config", s.cfgFile, "--source", "ingest", "--offsets", "0:0-", "--dry-run", "--output", "json", "--progress", "off")
			if code != exitOK {
				t.Fatalf("dry run = %d: %s", code, stderr)
			}
			check("dry run", stdout)
			code, stdout, stderr = replayCmd(ctx, "--config", s.cfgFile, "--source", "ingest", "--offsets", "0:0-", "--output", "json", "--progress", "off")
			if code != exitOK {
				t.Fatalf("replay = %d: %s", code, stderr)
			}
			check("replay", stdout)
			after := s.ends(t)
			if after[s.deadLetter] != before[s.deadLetter] || after[s.quarantine] != before[s.quarantine] ||
				after[s.us] != before[s.us]+wantUS || after[s.eu] != before[s.eu]+1 {
				t.Fatalf("end offsets %v → %v: want %d more on %s, 1 on %s, none on the dead-letter and quarantine topics", before, after, wantUS, s.us, s.eu)
			}
		})
	}
}
