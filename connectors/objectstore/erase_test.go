package objectstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"gocloud.dev/blob"

	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/sink"
)

// eraseBuckets runs test on a file:// bucket and on the dev stack's S3
// server, with the snappy codec (to see it kept by a rewrite).
func eraseBuckets(t *testing.T, test func(t *testing.T, s *objectstore.Store)) {
	t.Run("file", func(t *testing.T) {
		t.Parallel()
		s, err := objectstore.Open(context.Background(), objectstore.Config{URL: "file://" + filepath.ToSlash(t.TempDir()) + "?no_tmp_dir=true", Codec: "snappy"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		test(t, s)
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		b := testenv.NewS3(t)
		s, err := objectstore.Open(context.Background(), objectstore.Config{URL: b.URL(), Codec: "snappy"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		test(t, s)
	})
}

const alice = "user-alice-7f3a"

// erasureBatches are three users' records over two hours and two
// partitions, alice in most objects, and one object (offsets 40-41) of
// alice alone.
func erasureBatches() [][]sink.Record {
	users := []string{alice, "bob", "carol"}
	mk := func(from, to, partition int, hour int) []sink.Record {
		rs := records(from, to, partition)
		for i := range rs {
			rs[i].UserID = users[(from+i)%3]
			rs[i].Time = time.Date(2026, 11, 23, hour, 30, 0, 0, time.UTC)
		}
		return rs
	}
	only := mk(40, 42, 0, 3)
	for i := range only {
		only[i].UserID = alice
	}
	return [][]sink.Record{mk(0, 10, 0, 2), mk(10, 20, 0, 3), mk(0, 7, 1, 3), only}
}

type objectInfo struct {
	records map[string]map[string]any // by event id
	meta    map[string]string
	codec   string
}

func objectsOf(t *testing.T, b *blob.Bucket) map[string]objectInfo {
	t.Helper()
	ctx := context.Background()
	keys := listKeys(t, b)
	out := map[string]objectInfo{}
	for _, k := range keys {
		data, err := b.ReadAll(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		r, err := goavro.NewOCFReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		oi := objectInfo{records: map[string]map[string]any{}, meta: map[string]string{}, codec: r.CompressionName()}
		for mk, v := range r.MetaData() {
			if !strings.HasPrefix(mk, "avro.") {
				oi.meta[mk] = string(v)
			}
		}
		for r.Scan() {
			v, err := r.Read()
			if err != nil {
				t.Fatal(err)
			}
			m := v.(map[string]any)
			oi.records[m["event_id"].(string)] = m
		}
		out[k] = oi
	}
	return out
}

func listKeys(t *testing.T, b *blob.Bucket) []string {
	t.Helper()
	var keys []string
	it := b.List(nil)
	for {
		o, err := it.Next(context.Background())
		if err != nil {
			break
		}
		keys = append(keys, o.Key)
	}
	slices.Sort(keys)
	return keys
}

// TestEraseRewritesObjects: the user's records go from every object (in
// every hour and partition, and an object under a name of an earlier
// version), every other record stays exactly as it was in the object it
// was in, names, codec and metadata are kept, an object of the user alone
// stays as an empty object, a redelivery of the erased batch stores
// nothing again, and Count and Scan agree.
func TestEraseRewritesObjects(t *testing.T) {
	eraseBuckets(t, func(t *testing.T, s *objectstore.Store) {
		ctx := testenv.Context(t, 2*time.Minute)
		batches := erasureBatches()
		for _, b := range batches {
			if err := s.Write(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		// An object named as an earlier version named them.
		first := listKeys(t, s.Bucket())[0]
		old := strings.TrimSuffix(first, "-00000000000000000009.avro") + ".avro"
		if err := s.Bucket().Copy(ctx, old, first, nil); err != nil {
			t.Fatal(err)
		}
		before := objectsOf(t, s.Bucket())
		want := 0
		for _, oi := range before {
			for _, m := range oi.records {
				if m["user_id"] == alice {
					want++
				}
			}
		}
		if n, err := s.Count(ctx, alice); err != nil || n != want || want < 10 {
			t.Fatalf("Count = %d, %v; want %d", n, err, want)
		}
		n, err := s.Erase(ctx, alice)
		if err != nil || n != want {
			t.Fatalf("Erase = %d, %v; want %d", n, err, want)
		}
		after := objectsOf(t, s.Bucket())
		if !reflect.DeepEqual(keysOf(after), keysOf(before)) {
			t.Fatalf("objects changed names:\n%v\n%v", keysOf(before), keysOf(after))
		}
		for k, b := range before {
			a := after[k]
			removed := 0
			for id, m := range b.records {
				if m["user_id"] == alice {
					removed++
					if _, ok := a.records[id]; ok {
						t.Errorf("%s still holds %s of the user", k, id)
					}
					continue
				}
				if !reflect.DeepEqual(a.records[id], m) {
					t.Errorf("%s: record %s changed:\n%v\n%v", k, id, m, a.records[id])
				}
			}
			if len(a.records) != len(b.records)-removed {
				t.Errorf("%s: %d records, want %d", k, len(a.records), len(b.records)-removed)
			}
			if a.codec != "snappy" {
				t.Errorf("%s: codec %s", k, a.codec)
			}
			for mk, mv := range b.meta {
				if a.meta[mk] != mv {
					t.Errorf("%s: metadata %s = %q, was %q", k, mk, a.meta[mk], mv)
				}
			}
			if removed > 0 && a.meta["residency.erased_records"] != fmt.Sprint(removed) {
				t.Errorf("%s: residency.erased_records = %q, want %d", k, a.meta["residency.erased_records"], removed)
			}
		}
		onlyKey := ""
		for k := range after {
			if strings.HasSuffix(k, "-00000000000000000040-00000000000000000041.avro") {
				onlyKey = k
			}
		}
		if onlyKey == "" || len(after[onlyKey].records) != 0 {
			t.Fatalf("the object of the user alone: %q %v", onlyKey, after[onlyKey])
		}
		// A redelivery of everything stores nothing again.
		for _, b := range batches {
			if err := s.Write(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.Count(ctx, alice); err != nil || n != 0 {
			t.Fatalf("Count after a redelivery = %d, %v", n, err)
		}
		if n, err := s.Erase(ctx, alice); err != nil || n != 0 {
			t.Fatalf("Erase again = %d, %v", n, err)
		}
		var rows []erasure.Row
		if err := s.Scan(ctx, func(r erasure.Row) error { rows = append(rows, r); return nil }); err != nil {
			t.Fatal(err)
		}
		total := 0
		for _, oi := range after {
			total += len(oi.records)
		}
		if len(rows) != total {
			t.Fatalf("Scan gave %d rows, the objects hold %d", len(rows), total)
		}
		for _, r := range rows {
			if r.UserID == alice || r.Object == "" || r.EventID == "" || r.Region != "us" || r.Topic != usTopic || r.SourceTopic != "events" ||
				r.OccurredAt.IsZero() || string(r.Event) != `{"n":1}` {
				t.Fatalf("row %+v", r)
			}
		}
		if _, err := s.Erase(ctx, ""); !errors.Is(err, erasure.ErrEmptyUser) {
			t.Fatalf("Erase(\"\") = %v", err)
		}
	})
}

func keysOf(m map[string]objectInfo) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestEraseInterrupted: an erasure cut off at any moment leaves every
// object either as it was or without the user's records, every other
// user's record exactly once; running it again finishes it.
func TestEraseInterrupted(t *testing.T) {
	eraseBuckets(t, func(t *testing.T, s *objectstore.Store) {
		ctx := testenv.Context(t, 2*time.Minute)
		for _, b := range erasureBatches() {
			if err := s.Write(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		before := objectsOf(t, s.Bucket())
		others := map[string]int{}
		for _, oi := range before {
			for id, m := range oi.records {
				if m["user_id"] != alice {
					others[id]++
				}
			}
		}
		interrupted := 0
		for d := time.Microsecond; ; d += d/3 + time.Microsecond {
			cctx, cancel := context.WithTimeout(ctx, d)
			_, err := s.Erase(cctx, alice)
			cancel()
			now := objectsOf(t, s.Bucket())
			seen := map[string]int{}
			for k, oi := range now {
				hasUser := false
				for id, m := range oi.records {
					if m["user_id"] == alice {
						hasUser = true
					} else {
						seen[id]++
					}
				}
				if hasUser && !reflect.DeepEqual(oi.records, before[k].records) {
					t.Fatalf("after %v: %s holds the user but is not the object it was", d, k)
				}
			}
			if !reflect.DeepEqual(seen, others) {
				t.Fatalf("after %v: other users' records %v, want %v", d, seen, others)
			}
			if err == nil {
				break
			}
			interrupted++
		}
		if n, err := s.Count(ctx, alice); err != nil || n != 0 {
			t.Fatalf("Count after = %d, %v", n, err)
		}
		t.Logf("%d interrupted erasures before one completed", interrupted)
		if interrupted == 0 {
			t.Fatal("no erasure was interrupted: the test checked nothing")
		}
	})
}

// TestEraseRefusesUnreadableObject: an object that is not OCF stops
// Erase, Count and Scan with an error naming it; nothing is guessed.
func TestEraseRefusesUnreadableObject(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	if err := s.Write(ctx, erasureBatches()[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.Bucket().WriteAll(ctx, "us/2026-11-23/02/broken.avro", []byte("not avro"), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Erase(ctx, alice); err == nil || !strings.Contains(err.Error(), "broken.avro") {
		t.Fatalf("Erase = %v", err)
	}
	if _, err := s.Count(ctx, alice); err == nil {
		t.Fatal("Count read a broken object")
	}
	if err := s.Scan(ctx, func(erasure.Row) error { return nil }); err == nil || !strings.Contains(err.Error(), "broken.avro") {
		t.Fatalf("Scan = %v", err)
	}
}

// TestEraseEvents looks up and removes given events, rewriting their
// objects as Erase does; other records stay.
func TestEraseEvents(t *testing.T) {
	eraseBuckets(t, func(t *testing.T, s *objectstore.Store) {
		ctx := testenv.Context(t, time.Minute)
		batch := erasureBatches()[0]
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
		ids := []string{batch[2].EventID, batch[7].EventID, "no-such-event"}
		has, err := s.HasEvents(ctx, ids)
		if err != nil || len(has) != 2 || !has[batch[2].EventID] {
			t.Fatalf("HasEvents = %v, %v", has, err)
		}
		if n, err := s.EraseEvents(ctx, ids); err != nil || n != 2 {
			t.Fatalf("EraseEvents = %d, %v", n, err)
		}
		var left []string
		if err := s.Scan(ctx, func(r erasure.Row) error { left = append(left, r.EventID); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(left) != 8 || slices.Contains(left, batch[2].EventID) || slices.Contains(left, batch[7].EventID) {
			t.Fatalf("left %v", left)
		}
	})
}
