package objectstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/internal/benchtest"
	"github.com/residency-router/residency/internal/testenv"
)

// recordFeed is an audit.Feed of one partition held in memory: audit
// records of leaves, as the router appends them to the audit topic.
type recordFeed struct {
	mu   sync.Mutex
	recs []audit.AuditRecord
}

func (f *recordFeed) add(t testing.TB, leaves []audit.Leaf) {
	t.Helper()
	v, err := audit.EncodeWireRecord(leaves)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.recs = append(f.recs, audit.AuditRecord{Partition: 0, Offset: int64(len(f.recs)), Value: v})
}

func (f *recordFeed) Fetch(_ context.Context, from audit.Cursor, max int) ([]audit.AuditRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := min(from[0], int64(len(f.recs)))
	end := min(next+int64(max), int64(len(f.recs)))
	return append([]audit.AuditRecord(nil), f.recs[next:end]...), nil
}

func (f *recordFeed) Read(_ context.Context, p int32, from, to int64) ([]audit.AuditRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if p != 0 || from < 0 || to > int64(len(f.recs)) || from > to {
		return nil, fmt.Errorf("recordFeed: %d/%d-%d out of range", p, from, to)
	}
	return append([]audit.AuditRecord(nil), f.recs[from:to]...), nil
}

// routeLeaf is a distinct route leaf: offset off of "events", partition 0.
func routeLeaf(off int64) audit.Leaf {
	l := audit.Leaf{Kind: audit.KindRoute, Time: 1764028800000 + off, Actor: "router-a",
		Src:      audit.Source{Topic: "events", Partition: 0, Offset: off},
		Decision: audit.Routed, DecidedBy: "country", Jurisdiction: "EU", Region: "eu",
		Ruleset: audit.RulesetRef{Version: 1, Digest: audit.Sum([]byte("rules"))},
		Dest:    audit.Destination{Cluster: "b", Topic: "residency.eu", Partition: 0, Offset: off}}
	l.SetRecord(fmt.Append(nil, "k", off), fmt.Append(nil, "v", off))
	return l
}

// feedOf returns a feed of n leaves in records of perRecord.
func feedOf(t testing.TB, n, perRecord int) *recordFeed {
	f := &recordFeed{}
	for off := 0; off < n; off += perRecord {
		ls := make([]audit.Leaf, 0, perRecord)
		for i := off; i < min(off+perRecord, n); i++ {
			ls = append(ls, routeLeaf(int64(i)))
		}
		f.add(t, ls)
	}
	return f
}

// integrate runs the integrator until the feed is drained.
func integrate(t testing.TB, it *audit.Integrator) {
	ctx := context.Background()
	for {
		n, err := it.Step(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// TestAuditLogOnBuckets integrates 700 leaves into an AuditLogStore on a
// file:// bucket and on the dev stack's S3, under a prefix, then opens the
// log from the bucket as a verifier does: the checkpoint verifies, the C2SP
// layout is there, every leaf is in it in order, and a leaf's inclusion
// proof is served.
func TestAuditLogOnBuckets(t *testing.T) {
	for name, newURL := range map[string]func(t *testing.T) string{
		"file": func(t *testing.T) string { return "file://" + filepath.ToSlash(t.TempDir()) + "?no_tmp_dir=true" },
		"s3":   func(t *testing.T) string { return testenv.NewS3(t).URL() },
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testenv.Context(t, 60*time.Second)
			b, err := blob.OpenBucket(ctx, newURL(t))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			skey, vkey, err := audit.GenerateLogKey("residency.test/audit")
			if err != nil {
				t.Fatal(err)
			}
			store := objectstore.AuditLogStore{Bucket: b, Prefix: "audit/"}
			it, err := audit.NewIntegrator(audit.IntegratorConfig{Store: store, Feed: feedOf(t, 700, 50), SignerKey: skey, BatchRecords: 3})
			if err != nil {
				t.Fatal(err)
			}
			integrate(t, it)
			log, err := audit.OpenLog(ctx, store, vkey)
			if err != nil {
				t.Fatal(err)
			}
			if got := log.Checkpoint().Size; got != 700 {
				t.Fatalf("checkpoint size %d, want 700", got)
			}
			for _, p := range []string{"checkpoint", "log.pub", "tile/entries/000", "tile/entries/002.p/188", "tile/0/000", "tile/0/002.p/188", "tile/1/000.p/2"} {
				if ok, err := b.Exists(ctx, "audit/"+p); err != nil || !ok {
					t.Errorf("audit/%s exists = %v, %v", p, ok, err)
				}
			}
			next := int64(0)
			err = log.Scan(ctx, nil, func(i int64, raw []byte) error {
				l, err := audit.ParseLeaf(raw)
				if err != nil {
					return err
				}
				if i != next || l.Src.Offset != i {
					return fmt.Errorf("leaf %d holds source offset %d, want %d", i, l.Src.Offset, next)
				}
				next++
				return nil
			})
			if err != nil || next != 700 {
				t.Fatalf("Scan: %d leaves, %v; want 700", next, err)
			}
			if _, err := log.ProveLeaf(ctx, 345); err != nil {
				t.Errorf("ProveLeaf(345): %v", err)
			}
		})
	}
}

// BenchmarkIntegrate measures the integrator's throughput into a file://
// bucket: audit records of 500 leaves (one router batch each), 8 records
// (4000 leaves) per integration batch and checkpoint. audit's
// BenchmarkIntegrateMem is the same into memory.
func BenchmarkIntegrate(b *testing.B) {
	bucket, err := blob.OpenBucket(context.Background(), "file://"+filepath.ToSlash(b.TempDir())+"?no_tmp_dir=true")
	if err != nil {
		b.Fatal(err)
	}
	defer bucket.Close()
	skey, _, err := audit.GenerateLogKey("residency.test/audit")
	if err != nil {
		b.Fatal(err)
	}
	feed := feedOf(b, max(b.N, 1), 500)
	it, err := audit.NewIntegrator(audit.IntegratorConfig{Store: objectstore.AuditLogStore{Bucket: bucket}, Feed: feed, SignerKey: skey, BatchRecords: 8})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start, cpu := time.Now(), benchtest.CPUTime()
	integrate(b, it)
	b.ReportMetric(float64(it.Size())/time.Since(start).Seconds(), "leaves/s")
	b.ReportMetric(float64(it.Size())/(benchtest.CPUTime()-cpu).Seconds(), "leaves/cpu-s")
}
