package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"
)

// memFeed is an in-memory audit topic (Fetch returns at once when nothing is
// new, so tests take a Step of 0 leaves as caught up). Fetch interleaves partitions in a
// random order, so an integration batch's order is not a function of the
// cursor: only the intent makes a redo write the same tree.
type memFeed struct {
	mu    sync.Mutex
	parts map[int32][]AuditRecord
	rnd   *rand.Rand
}

func newMemFeed(seed uint64) *memFeed {
	return &memFeed{parts: map[int32][]AuditRecord{}, rnd: rand.New(rand.NewPCG(seed, 1))}
}

// add appends one audit record holding leaves to partition p.
func (f *memFeed) add(t testing.TB, p int32, leaves ...Leaf) {
	rec := encodeRecord(t, leaves...)
	f.addRaw(p, rec)
}

func (f *memFeed) addRaw(p int32, value []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	off := int64(len(f.parts[p]))
	f.parts[p] = append(f.parts[p], AuditRecord{Partition: p, Offset: off, Value: value})
}

func (f *memFeed) Fetch(_ context.Context, from Cursor, max int) ([]AuditRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	next := map[int32]int64{}
	var avail []int32
	for p, recs := range f.parts {
		next[p] = from[p]
		if from[p] < int64(len(recs)) {
			avail = append(avail, p)
		}
	}
	var out []AuditRecord
	for len(out) < max && len(avail) > 0 {
		i := f.rnd.IntN(len(avail))
		p := avail[i]
		out = append(out, f.parts[p][next[p]])
		next[p]++
		if next[p] >= int64(len(f.parts[p])) {
			avail = append(avail[:i], avail[i+1:]...)
		}
	}
	return out, nil
}

func (f *memFeed) Read(_ context.Context, p int32, from, to int64) ([]AuditRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	recs := f.parts[p]
	if from < 0 || to > int64(len(recs)) || from > to {
		return nil, fmt.Errorf("memFeed: %d/%d-%d out of range", p, from, to)
	}
	return append([]AuditRecord(nil), recs[from:to]...), nil
}

var errCrash = errors.New("crash")

// crashStore fails every operation once its budget of writes is spent, like
// a process killed at that moment (writes before it are visible whole).
type crashStore struct {
	Store
	mu     sync.Mutex
	budget int
}

func (c *crashStore) spend() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.budget <= 0 {
		return errCrash
	}
	c.budget--
	return nil
}

func (c *crashStore) Get(ctx context.Context, p string) ([]byte, error) {
	c.mu.Lock()
	dead := c.budget <= 0
	c.mu.Unlock()
	if dead {
		return nil, errCrash
	}
	return c.Store.Get(ctx, p)
}

func (c *crashStore) Put(ctx context.Context, p string, d []byte) error {
	if err := c.spend(); err != nil {
		return err
	}
	return c.Store.Put(ctx, p, d)
}

func (c *crashStore) PutIfAbsent(ctx context.Context, p string, d []byte) error {
	if err := c.spend(); err != nil {
		return err
	}
	return c.Store.PutIfAbsent(ctx, p, d)
}

var testLogKey, testLogPub = func() (string, string) {
	s, v, err := GenerateLogKey("residency.test/audit")
	if err != nil {
		panic(err)
	}
	return s, v
}()

// routeLeaf is a distinct route leaf: partition p, offset off of "events".
func routeLeaf(p int32, off int64) Leaf {
	l := Leaf{Kind: KindRoute, Time: 1764028800000 + off, Actor: "router-a",
		Src:      Source{Topic: "events", Partition: p, Offset: off},
		Decision: Routed, DecidedBy: "country", Jurisdiction: "EU", Region: "eu",
		Ruleset: RulesetRef{Version: 1, Digest: Sum([]byte("rules"))},
		Dest:    Destination{Cluster: "b", Topic: "residency.eu", Partition: p, Offset: off}}
	l.SetRecord([]byte(fmt.Sprint("k", off)), []byte(fmt.Sprint("v", p, "/", off)))
	return l
}

// checkLog opens the log and checks it holds exactly the want leaves (by
// source coordinates), each once, in the order of their audit partition.
func checkLog(t *testing.T, store Store, want map[string]bool) *Log {
	t.Helper()
	ctx := context.Background()
	log, err := OpenLog(ctx, store, testLogPub)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	last := map[int32]int64{}
	err = log.Scan(ctx, nil, func(i int64, b []byte) error {
		l, err := ParseLeaf(b)
		if err != nil {
			return err
		}
		id := fmt.Sprint(l.Src.Partition, "/", l.Src.Offset)
		if seen[id] {
			return fmt.Errorf("leaf %s integrated twice (index %d)", id, i)
		}
		seen[id] = true
		if prev, ok := last[l.Src.Partition]; ok && l.Src.Offset <= prev {
			return fmt.Errorf("partition %d out of order at index %d", l.Src.Partition, i)
		}
		last[l.Src.Partition] = l.Src.Offset
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for id := range want {
		if !seen[id] {
			t.Errorf("leaf %s lost", id)
		}
	}
	if int64(len(want)) != log.Checkpoint().Size {
		t.Errorf("checkpoint size %d, want %d", log.Checkpoint().Size, len(want))
	}
	return log
}

func TestIntegratorCrashAnywhere(t *testing.T) {
	for _, tc := range []struct {
		bucket string
		parts  int32
	}{{"mem", 1}, {"mem", 3}} {
		parts := tc.parts
		t.Run(fmt.Sprint(tc.bucket, " ", parts, " partitions"), func(t *testing.T) {
			ctx := context.Background()
			var mem Store = &MemStore{}
			cs := &crashStore{Store: mem}
			feed := newMemFeed(uint64(parts))
			want := map[string]bool{}
			rnd := rand.New(rand.NewPCG(7, uint64(parts)))
			var next [3]int64
			crashes := 0
			for round := 0; round < 200; round++ {
				// Producers append a few records of 1..40 leaves.
				for k := rnd.IntN(4); k > 0; k-- {
					p := rnd.Int32N(parts)
					var ls []Leaf
					for n := 1 + rnd.IntN(40); n > 0; n-- {
						ls = append(ls, routeLeaf(p, next[p]))
						want[fmt.Sprint(p, "/", next[p])] = true
						next[p]++
					}
					feed.add(t, p, ls...)
				}
				// A restarted integrator, killed after a random number of writes.
				cs.budget = rnd.IntN(12)
				it, err := NewIntegrator(IntegratorConfig{Store: cs, Feed: feed, SignerKey: testLogKey, BatchRecords: 1 + rnd.IntN(5)})
				if err != nil {
					t.Fatal(err)
				}
				for {
					n, err := it.Step(ctx)
					if err != nil {
						if errors.Is(err, errCrash) {
							crashes++
							break
						}
						t.Fatalf("round %d: %v", round, err)
					}
					if n == 0 {
						break
					}
				}
			}
			// Drain with no more crashes.
			cs.budget = 1 << 30
			it, _ := NewIntegrator(IntegratorConfig{Store: cs, Feed: feed, SignerKey: testLogKey})
			for {
				n, err := it.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			if crashes < 100 {
				t.Fatalf("only %d crashes simulated", crashes)
			}
			checkLog(t, mem, want)
			t.Logf("%d leaves, %d crashes", len(want), crashes)
		})
	}
}

func TestIntegratorZombie(t *testing.T) {
	// Two integrators on one store, as after a rebalance that left the old
	// one running: they take turns; the log stays one history.
	ctx := context.Background()
	mem := &MemStore{}
	feed := newMemFeed(9)
	want := map[string]bool{}
	a, _ := NewIntegrator(IntegratorConfig{Store: mem, Feed: feed, SignerKey: testLogKey, BatchRecords: 2})
	b, _ := NewIntegrator(IntegratorConfig{Store: mem, Feed: feed, SignerKey: testLogKey, BatchRecords: 3})
	var off [2]int64
	for round := 0; round < 60; round++ {
		p := int32(round % 2)
		feed.add(t, p, routeLeaf(p, off[p]), routeLeaf(p, off[p]+1))
		want[fmt.Sprint(p, "/", off[p])], want[fmt.Sprint(p, "/", off[p]+1)] = true, true
		off[p] += 2
		for _, it := range []*Integrator{a, b, a} {
			if _, err := it.Step(ctx); err != nil && !errors.Is(err, ErrStateAhead) {
				t.Fatal(err)
			}
		}
	}
	for _, it := range []*Integrator{a, b, a, b, a, b} {
		for {
			n, err := it.Step(ctx)
			if err != nil && !errors.Is(err, ErrStateAhead) {
				t.Fatal(err)
			}
			if n == 0 && err == nil {
				break
			}
		}
	}
	checkLog(t, mem, want)
}

// TestIntegratorLayout integrates format 1 and format 2 records (and one
// that is neither) and checks the log and its C2SP layout in the store;
// connectors/objectstore's TestAuditLogOnBuckets does the same on file://
// and S3 buckets.
func TestIntegratorLayout(t *testing.T) {
	for name, store := range map[string]Store{"mem": &MemStore{}} {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			feed := newMemFeed(1)
			want := map[string]bool{}
			for off := int64(0); off < 700; off += 50 {
				var ls []Leaf
				for i := off; i < off+50; i++ {
					ls = append(ls, routeLeaf(0, i))
					want[fmt.Sprint(0, "/", i)] = true
				}
				if off%100 == 50 {
					// Every other record in format 1: a topic written
					// before format 2 and after integrates in one go.
					feed.addRaw(0, encodeV1Record(t, ls...))
				} else {
					feed.add(t, 0, ls...)
				}
			}
			feed.addRaw(0, []byte("not an audit record"))
			it, err := NewIntegrator(IntegratorConfig{Store: store, Feed: feed, SignerKey: testLogKey, BatchRecords: 3, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			for {
				n, err := it.Step(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					break
				}
			}
			if it.Skipped() != 1 {
				t.Errorf("skipped %d records, want 1", it.Skipped())
			}
			log := checkLog(t, store, want)
			// The C2SP layout is there.
			for _, p := range []string{"checkpoint", "log.pub", "tile/entries/000", "tile/entries/002.p/188", "tile/0/000", "tile/0/002.p/188", "tile/1/000.p/2"} {
				if _, err := store.Get(ctx, p); err != nil {
					t.Errorf("%s: %v", p, err)
				}
			}
			pub, _ := store.Get(ctx, "log.pub")
			if string(pub) != testLogPub+"\n" {
				t.Errorf("log.pub = %q", pub)
			}
			if log.Checkpoint().Origin != "residency.test/audit" {
				t.Errorf("origin %q", log.Checkpoint().Origin)
			}
		})
	}
}

func TestIntegratorRefusesChangedAuditTopic(t *testing.T) {
	ctx := context.Background()
	mem := &MemStore{}
	cs := &crashStore{Store: mem, budget: 1} // the intent only
	feed := newMemFeed(1)
	feed.add(t, 0, routeLeaf(0, 0), routeLeaf(0, 1))
	it, _ := NewIntegrator(IntegratorConfig{Store: cs, Feed: feed, SignerKey: testLogKey})
	// load writes log.pub and the checkpoint first: give it room for them.
	cs.budget = 3
	if _, err := it.Step(ctx); !errors.Is(err, errCrash) {
		t.Fatalf("Step = %v, want a crash after the intent", err)
	}
	// Someone rewrites the audit record before the restart.
	feed.mu.Lock()
	rec := encodeRecord(t, routeLeaf(0, 5))
	feed.parts[0][0].Value = rec
	feed.mu.Unlock()
	cs.budget = 100
	it, _ = NewIntegrator(IntegratorConfig{Store: cs, Feed: feed, SignerKey: testLogKey})
	if _, err := it.Step(ctx); !errors.Is(err, ErrAuditTopicChanged) {
		t.Fatalf("Step = %v, want ErrAuditTopicChanged", err)
	}
}

func TestIntegratorRunStopsWithContext(t *testing.T) {
	feed := newMemFeed(1)
	feed.add(t, 0, routeLeaf(0, 0))
	it, _ := NewIntegrator(IntegratorConfig{Store: &MemStore{}, Feed: &blockingFeed{feed}, SignerKey: testLogKey})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- it.Run(ctx) }()
	for it.Size() < 1 {
		runtime.Gosched()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// blockingFeed blocks in Fetch while nothing is new, as a Kafka feed does.
type blockingFeed struct{ *memFeed }

func (f *blockingFeed) Fetch(ctx context.Context, from Cursor, max int) ([]AuditRecord, error) {
	for {
		recs, _ := f.memFeed.Fetch(ctx, from, max)
		if len(recs) > 0 {
			return recs, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}
