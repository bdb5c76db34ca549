package objectstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"
	"gocloud.dev/blob"

	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

const (
	usTopic   = "residency.us"
	euTopic   = "residency.eu"
	quarTopic = "residency.sink-quarantine"
	storeName = "us-objectstore"
)

func openStore(t *testing.T) (*objectstore.Store, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := objectstore.Open(context.Background(), objectstore.Config{URL: "file://" + filepath.ToSlash(dir) + "?no_tmp_dir=true"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, dir
}

// stored is one record read back, with the object it came from.
type stored struct {
	key    string
	native map[string]any
}

// readAll reads every object of the bucket as OCF.
func readAll(t *testing.T, b *blob.Bucket) []stored {
	t.Helper()
	ctx := context.Background()
	var out []stored
	it := b.List(nil)
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := b.ReadAll(ctx, obj.Key)
		if err != nil {
			t.Fatal(err)
		}
		r, err := goavro.NewOCFReader(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("%s is not an OCF: %v", obj.Key, err)
		}
		for r.Scan() {
			v, err := r.Read()
			if err != nil {
				t.Fatalf("%s: %v", obj.Key, err)
			}
			out = append(out, stored{key: obj.Key, native: v.(map[string]any)})
		}
		if r.Err() != nil {
			t.Fatalf("%s: %v", obj.Key, r.Err())
		}
	}
	return out
}

// records returns sink records of test events from..to-1 on one partition,
// offsets equal to the event numbers.
func records(from, to, partition int) []sink.Record {
	var out []sink.Record
	for i := from; i < to; i++ {
		out = append(out, sink.Record{
			EventID: sinktest.EventID(i), UserID: sinktest.UserID(i), Jurisdiction: "US", Region: "us",
			OccurredAt: sinktest.OccurredAt(i), RulesetVersion: "4", SourceTopic: "events", SourcePartition: 0,
			SourceOffset: int64(i), Topic: usTopic, Partition: partition, Offset: int64(i),
			Time: time.Date(2026, 11, 23, 2, 30, 0, 0, time.UTC), Event: []byte(`{"n":1}`), Raw: []byte{byte(i)},
		})
	}
	return out
}

func eventIDs(rs []stored) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[r.native["event_id"].(string)]++
	}
	return m
}

// TestRedeliveryStoresEachOffsetOnce: a batch redelivered after a crash
// (shorter or longer than the first delivery) stores only the offsets no
// object holds yet: every event exactly once.
func TestRedeliveryStoresEachOffsetOnce(t *testing.T) {
	s, dir := openStore(t)
	ctx := context.Background()
	// First delivery of offsets 0-9 (not committed), then a shorter
	// redelivery 0-4 and the rest 5-9 as the next batch: nothing new.
	for _, b := range [][]sink.Record{records(0, 10, 0), records(0, 5, 0), records(5, 10, 0)} {
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// A longer redelivery on another partition: 20-24, then 20-29 (25-29
	// are new); the same batch again whole (nothing new).
	for _, b := range [][]sink.Record{records(20, 25, 1), records(20, 30, 1), records(20, 30, 1)} {
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, s.Bucket())
	ids := eventIDs(got)
	if len(got) != 20 || len(ids) != 20 {
		t.Fatalf("read %d records of %d events, want 20 each (exactly once)", len(got), len(ids))
	}
	checkObjects(t, got,
		"us/2026-11-23/02/residency.us-0-00000000000000000000-00000000000000000009.avro",
		"us/2026-11-23/02/residency.us-1-00000000000000000020-00000000000000000024.avro",
		"us/2026-11-23/02/residency.us-1-00000000000000000025-00000000000000000029.avro",
	)
	checkNoTempFiles(t, dir)
}

// checkObjects fails unless the records were read from exactly the objects
// want.
func checkObjects(t *testing.T, got []stored, want ...string) {
	t.Helper()
	keys := map[string]bool{}
	for _, r := range got {
		keys[r.key] = true
	}
	if len(keys) != len(want) {
		t.Errorf("objects %v, want %v", keys, want)
	}
	for _, k := range want {
		if !keys[k] {
			t.Errorf("object %s missing (have %v)", k, keys)
		}
	}
}

// offsets returns how many stored records hold each offset of partition.
func offsets(got []stored, partition int32) map[int64]int {
	m := map[int64]int{}
	for _, r := range got {
		if r.native["partition"] == partition {
			m[r.native["offset"].(int64)]++
		}
	}
	return m
}

// TestStaleWriterNeverRemovesOffsets: sink member A fetched 100-149 and its
// write is retrying; a rebalance gives the partition to B, which stores
// 100-199 and commits 200; A's retry then lands. Offsets 150-199 must still
// be there (before the fix, A overwrote B's object with 100-149).
func TestStaleWriterNeverRemovesOffsets(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	if err := s.Write(ctx, records(100, 200, 0)); err != nil { // B
		t.Fatal(err)
	}
	if err := s.Write(ctx, records(100, 150, 0)); err != nil { // A, stale
		t.Fatal(err)
	}
	got := readAll(t, s.Bucket())
	held := offsets(got, 0)
	for o := int64(100); o < 200; o++ {
		if held[o] != 1 {
			t.Errorf("offset %d stored %d times, want once", o, held[o])
		}
	}
	checkObjects(t, got, "us/2026-11-23/02/residency.us-0-00000000000000000100-00000000000000000199.avro")

	// The other order (A's write lands first, then B's): B adds only
	// what A's object does not hold.
	s2, _ := openStore(t)
	if err := s2.Write(ctx, records(100, 150, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s2.Write(ctx, records(100, 200, 0)); err != nil {
		t.Fatal(err)
	}
	got = readAll(t, s2.Bucket())
	held = offsets(got, 0)
	for o := int64(100); o < 200; o++ {
		if held[o] != 1 {
			t.Errorf("A then B: offset %d stored %d times, want once", o, held[o])
		}
	}
}

// TestGapsAreStoredWhenRedelivered: offsets the sink did not write (say, a
// quarantined event) split the batch into objects of consecutive offsets,
// so a later delivery that writes the missing offset (under a ruleset that
// now lets the store hold it) is not mistaken for covered.
func TestGapsAreStoredWhenRedelivered(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	all := records(0, 10, 0)
	gappy := append(append([]sink.Record{}, all[:5]...), all[6:]...)
	for _, b := range [][]sink.Record{gappy, all} {
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, s.Bucket())
	held := offsets(got, 0)
	for o := int64(0); o < 10; o++ {
		if held[o] != 1 {
			t.Errorf("offset %d stored %d times, want once", o, held[o])
		}
	}
	checkObjects(t, got,
		"us/2026-11-23/02/residency.us-0-00000000000000000000-00000000000000000004.avro",
		"us/2026-11-23/02/residency.us-0-00000000000000000005-00000000000000000005.avro",
		"us/2026-11-23/02/residency.us-0-00000000000000000006-00000000000000000009.avro",
	)
}

// TestObjectsFollowEachRecordsHour: a record's directory is the hour of its
// own timestamp, so every delivery of an offset looks for it in the same
// directory, however the batches are cut.
func TestObjectsFollowEachRecordsHour(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	hourOf := func(rs []sink.Record) []sink.Record {
		for i := range rs {
			h := 2
			if rs[i].Offset >= 5 {
				h = 3
			}
			rs[i].Time = time.Date(2026, 11, 23, h, 59*(3-h), 0, 0, time.UTC)
		}
		return rs
	}
	// 0-9 spans 02:59 and 03:00; the redelivery starts at 5 (03:00) and is
	// longer.
	for _, b := range [][]sink.Record{hourOf(records(0, 10, 0)), hourOf(records(5, 15, 0))} {
		if err := s.Write(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	got := readAll(t, s.Bucket())
	held := offsets(got, 0)
	for o := int64(0); o < 15; o++ {
		if held[o] != 1 {
			t.Errorf("offset %d stored %d times, want once", o, held[o])
		}
	}
	checkObjects(t, got,
		"us/2026-11-23/02/residency.us-0-00000000000000000000-00000000000000000004.avro",
		"us/2026-11-23/03/residency.us-0-00000000000000000005-00000000000000000009.avro",
		"us/2026-11-23/03/residency.us-0-00000000000000000010-00000000000000000014.avro",
	)
}

// TestOtherTopicsWithTheSamePrefixAreIgnored: topic "t" partition 1 and
// topic "t-1" share the name prefix "t-1-"; one's objects never count as
// the other's.
func TestOtherTopicsWithTheSamePrefixAreIgnored(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	a, b := records(0, 5, 1), records(0, 5, 2)
	for i := range a {
		a[i].Topic = "t"
		b[i].Topic = "t-1"
		b[i].EventID += "-b"
	}
	for _, batch := range [][]sink.Record{b, a} {
		if err := s.Write(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	if got := readAll(t, s.Bucket()); len(got) != 10 || len(eventIDs(got)) != 10 {
		t.Fatalf("read %d records, want 10", len(got))
	}
}

// checkNoTempFiles fails if dir holds anything but objects and fileblob's
// attribute sidecars.
func checkNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if !strings.HasSuffix(path, ".avro") && !strings.HasSuffix(path, ".avro.attrs") {
			t.Errorf("unexpected file %s", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailedWriteLeavesNothingVisible(t *testing.T) {
	s, dir := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Write(ctx, records(0, 10, 0)); err == nil {
		t.Fatal("Write with a cancelled context succeeded")
	}
	if got := readAll(t, s.Bucket()); len(got) != 0 {
		t.Fatalf("%d records visible after a failed write", len(got))
	}
	checkNoTempFiles(t, dir)
}

func TestOpenRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		cfg   objectstore.Config
		field string
	}{
		{objectstore.Config{}, "url"},
		{objectstore.Config{URL: "file:///tmp", Codec: "zstd"}, "codec"},
		{objectstore.Config{URL: "nosuch://bucket"}, "url"},
	} {
		_, err := objectstore.Open(ctx, c.cfg)
		if !errors.Is(err, objectstore.ErrConfig) || !strings.Contains(err.Error(), c.field) {
			t.Errorf("Open(%+v) = %v, want ErrConfig naming %s", c.cfg, err, c.field)
		}
	}
}

// hookStore runs before ahead of each write of the store it wraps.
type hookStore struct {
	sink.Store
	mu     sync.Mutex
	n      int
	before func(ctx context.Context, n int, batch []sink.Record) error
}

func (h *hookStore) Write(ctx context.Context, batch []sink.Record) error {
	h.mu.Lock()
	h.n++
	n := h.n
	h.mu.Unlock()
	if err := h.before(ctx, n, batch); err != nil {
		return err
	}
	return h.Store.Write(ctx, batch)
}

// TestSinkRoundTripAndRestart drives the sink runtime into real files: it
// kills the sink after part of a batch is stored, restarts it, and reads
// every object back as OCF: each event exactly once, contents matching.
func TestSinkRoundTripAndRestart(t *testing.T) {
	s, dir := openStore(t)
	b := streamtest.NewBroker()
	b.CreateTopic(usTopic, 2)
	b.CreateTopic(quarTopic, 1)
	const total = 45
	var msgs []stream.Message
	for i := range total {
		msgs = append(msgs, sinktest.Message(usTopic, i, "US", "us", "US"))
	}
	if err := b.Publisher().Publish(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
	rs := sinktest.NewRules(sinktest.Ruleset(7, usTopic, euTopic, storeName, "us"))
	dec, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := sink.Config{Store: storeName, Region: "us", Topic: usTopic, QuarantineTopic: quarTopic,
		BatchSize: 10, BatchTimeout: time.Hour, RetryBackoff: 5 * time.Millisecond, DrainTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}

	// First life: the second batch is partly stored, then the sink dies.
	crashed := make(chan struct{})
	var once sync.Once
	hs := &hookStore{Store: s, before: func(ctx context.Context, n int, batch []sink.Record) error {
		if n < 2 {
			return nil
		}
		once.Do(func() {
			if err := s.Write(ctx, batch[:len(batch)/2+1]); err != nil {
				t.Errorf("partial write: %v", err)
			}
			close(crashed)
		})
		<-ctx.Done()
		return ctx.Err()
	}}
	s1, err := sink.New(cfg, b.Subscriber("g", usTopic), hs, b.Publisher(), rs, dec)
	if err != nil {
		t.Fatal(err)
	}
	ctx1, kill := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s1.Run(ctx1) }()
	<-crashed
	kill()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(readAll(t, s.Bucket())); n <= 10 || n >= 20 {
		t.Fatalf("%d records stored before the restart, want batch 1 and part of batch 2", n)
	}

	// Second life.
	cfg.BatchTimeout = 20 * time.Millisecond
	s2, err := sink.New(cfg, b.Subscriber("g", usTopic), s, b.Publisher(), rs, dec)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, stop := context.WithCancel(context.Background())
	done2 := make(chan error, 1)
	go func() { done2 <- s2.Run(ctx2) }()
	deadline := time.Now().Add(10 * time.Second)
	for b.Committed("g", usTopic, 0)+b.Committed("g", usTopic, 1) != total {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for every offset to be committed")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if err := <-done2; err != nil {
		t.Fatal(err)
	}

	got := readAll(t, s.Bucket())
	ids := eventIDs(got)
	if len(got) != total || len(ids) != total {
		t.Fatalf("read %d records of %d distinct events, want %d each", len(got), len(ids), total)
	}
	byID := map[string]stream.Message{}
	for _, m := range b.Records(usTopic) {
		byID[sinktest.EventID(eventNumber(t, m))] = m
	}
	keyRe := regexp.MustCompile(`^us/\d{4}-\d{2}-\d{2}/\d{2}/residency\.us-[01]-\d{20}-\d{20}\.avro$`)
	for _, r := range got {
		n := r.native
		id := n["event_id"].(string)
		m := byID[id]
		if !keyRe.MatchString(r.key) {
			t.Errorf("object name %s does not follow region/date/hour/topic-partition-first-last.avro", r.key)
		}
		if !bytes.Equal(n["raw"].([]byte), m.Value) || n["region"] != "us" || n["jurisdiction"] != "US" ||
			n["ruleset_version"] != "7" || n["topic"] != usTopic || n["partition"] != int32(m.Partition) ||
			n["offset"] != m.Offset || n["source_topic"] != "events" {
			t.Errorf("stored %s does not match its record", id)
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(n["event"].(string)), &doc); err != nil || doc["event_id"] != id || doc["country"] != "US" {
			t.Errorf("stored event document of %s: %v", id, err)
		}
		if ts, ok := n["occurred_at"].(time.Time); !ok || !ts.Equal(sinktest.OccurredAt(eventNumber(t, m))) {
			t.Errorf("occurred_at of %s = %v", id, n["occurred_at"])
		}
	}
	checkNoTempFiles(t, dir)
}

// eventNumber recovers i from the key sinktest gives event i.
func eventNumber(t *testing.T, m stream.Message) int {
	t.Helper()
	var n int
	for _, c := range strings.TrimPrefix(string(m.Key), "u-") {
		n = n*10 + int(c-'0')
	}
	return n - 1000
}
