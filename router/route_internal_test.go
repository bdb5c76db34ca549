package router

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// recordingPub is a Publisher that honours the memory contract: it copies
// every message it accepts. While fail is not 0, its calls fail (fail
// counts down; -1 fails for ever) and the first failed call's messages are
// kept as they were given (no copy), with a copy to compare them with
// later, as a publisher that may still read them after an error would.
type recordingPub struct {
	mu        sync.Mutex
	fail      int
	published []stream.Message // copies of the accepted messages
	kept      []stream.Message // the messages of the first failed call, as given
	keptCopy  []stream.Message // and a copy of them at the time
}

func (p *recordingPub) Publish(_ context.Context, msgs ...stream.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != 0 {
		if p.fail > 0 {
			p.fail--
		}
		if p.kept == nil {
			p.kept, p.keptCopy = msgs, streamtest.CloneMessages(msgs)
		}
		return errors.New("broker down")
	}
	p.published = append(p.published, streamtest.CloneMessages(msgs)...)
	return nil
}

func (*recordingPub) Close() error { return nil }

// take returns and forgets the accepted messages.
func (p *recordingPub) take() []stream.Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	ms := p.published
	p.published = nil
	return ms
}

func sameHeaders(a, b []stream.Header) bool {
	return slices.EqualFunc(a, b, func(x, y stream.Header) bool { return x.Key == y.Key && bytes.Equal(x.Value, y.Value) })
}

// TestRouteReusesHeadersOnlyAfterCleanPublish checks how route reuses the
// header builder's slab and arena from batch to batch: a batch after one
// whose every Publish returned nil builds its headers in the same memory,
// and they are exactly the headers outHeaders gives; a batch after one with
// a failed Publish (even one a retry made good) gets fresh memory, so the
// messages the failed call was given stay unchanged; after a clean batch
// reuse resumes.
func TestRouteReusesHeadersOnlyAfterCleanPublish(t *testing.T) {
	_, rs := hotpathRouter(t)
	fields, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ingest, remote := &recordingPub{}, &recordingPub{}
	r, err := New(Config{Subscriber: nopSubscriber{}, Publishers: map[string]stream.Publisher{"ingest": ingest, "remote": remote},
		IngestCluster: "ingest", QuarantineTopic: "q", DeadLetterTopic: "dl", Fields: fields, Rules: fixedRules{rs},
		Instance: "router-0", Logger: slog.New(slog.DiscardHandler), RetryMin: time.Millisecond, RetryMax: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mix := hotpathMessages(t)
	// batch returns the mix with offsets of its own, so every batch's
	// digits differ.
	batch := func(n int) []stream.Message {
		ms := slices.Clone(mix)
		for i := range ms {
			ms[i].Offset = int64(n*10_000_000 + i*7)
		}
		return ms
	}
	// route routes b, checks that every event was published once with
	// exactly outHeaders' headers, and returns the backing arrays of the
	// builder's slab and arena.
	route := func(name string, b []stream.Message) (*stream.Header, *byte) {
		t.Helper()
		if err := syncRoute(ctx, r, b, rs); err != nil {
			t.Fatalf("%s: route: %v", name, err)
		}
		want := map[string][]stream.Header{} // by source offset
		for i := range b {
			f, err := r.pipe.extract(ctx, &b[i])
			d := DeadLetter(err)
			if err == nil {
				d = Decide(f, "", rs)
			}
			want[strconv.FormatInt(b[i].Offset, 10)] = outHeaders(&b[i], &d, f.Writer, rs.VersionString(), rs.ShortDigest(), "router-0", err)
		}
		got := append(ingest.take(), remote.take()...)
		if len(got) != len(b) {
			t.Fatalf("%s: %d events published, want %d", name, len(got), len(b))
		}
		for _, m := range got {
			off, _ := HeaderValue(m.Headers, HeaderSourceOffset)
			w, ok := want[string(off)]
			if !ok {
				t.Fatalf("%s: published an event with source offset %q, not in the batch (or twice)", name, off)
			}
			delete(want, string(off))
			if !sameHeaders(m.Headers, w) {
				t.Fatalf("%s: event at offset %s published with headers\n%v\nwant\n%v", name, off, m.Headers, w)
			}
		}
		return unsafe.SliceData(r.pipe.hdr.slab), unsafe.SliceData(r.pipe.hdr.arena)
	}

	slab1, arena1 := route("batch 1", batch(1))
	slab2, arena2 := route("batch 2", batch(2))
	if slab2 != slab1 || arena2 != arena1 {
		t.Fatal("batch 2 did not reuse batch 1's slab and arena although batch 1 was published")
	}
	// Batch 3's first publish to the remote cluster fails, its retry
	// succeeds. Batch 3 itself may reuse batch 2's memory.
	remote.fail = 1
	slab3, arena3 := route("batch 3", batch(3))
	if slab3 != slab2 || arena3 != arena2 {
		t.Fatal("batch 3 did not reuse batch 2's slab and arena although batch 2 was published")
	}
	if len(remote.kept) == 0 {
		t.Fatal("the failing publisher was not called")
	}
	// Batch 4 must not overwrite what the failed call may still read.
	slab4, arena4 := route("batch 4", batch(4))
	if slab4 == slab3 || arena4 == arena3 {
		t.Fatal("batch 4 reused the memory of batch 3, whose publish failed once")
	}
	for i := range remote.kept {
		if g, w := &remote.kept[i], &remote.keptCopy[i]; !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || !sameHeaders(g.Headers, w.Headers) {
			t.Fatalf("message %d of the failed publish changed after it returned:\n%v\nwas\n%v", i, g.Headers, w.Headers)
		}
	}
	// Batch 4 was clean: batch 5 reuses its memory again.
	slab5, arena5 := route("batch 5", batch(5))
	if slab5 != slab4 || arena5 != arena4 {
		t.Fatal("batch 5 did not reuse batch 4's slab and arena although batch 4 was published")
	}
}

// TestRouteDoesNotReuseAfterFailedPublish checks that when route fails
// because publishing gave up, the next batch (the router run again) does
// not build its headers in the memory the failed calls were given.
func TestRouteDoesNotReuseAfterFailedPublish(t *testing.T) {
	_, rs := hotpathRouter(t)
	fields, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	pub := &recordingPub{}
	r, err := New(Config{Subscriber: nopSubscriber{}, Publishers: map[string]stream.Publisher{"ingest": pub, "remote": pub},
		IngestCluster: "ingest", QuarantineTopic: "q", DeadLetterTopic: "dl", Fields: fields, Rules: fixedRules{rs},
		Instance: "router-0", Logger: slog.New(slog.DiscardHandler),
		RetryMin: time.Millisecond, RetryMax: time.Millisecond, GiveUp: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mix := hotpathMessages(t)
	if err := syncRoute(ctx, r, mix, rs); err != nil { // a clean batch: released
		t.Fatal(err)
	}
	slab1 := unsafe.SliceData(r.pipe.hdr.slab)
	// Every Publish of the next batch fails until route gives up.
	pub.fail = -1
	if err := syncRoute(ctx, r, mix, rs); !errors.Is(err, ErrGaveUp) {
		t.Fatalf("route = %v, want ErrGaveUp", err)
	}
	if slab := unsafe.SliceData(r.pipe.hdr.slab); slab != slab1 {
		t.Fatal("the failed batch did not reuse the clean batch's slab")
	}
	if len(pub.kept) == 0 {
		t.Fatal("the failing publisher was not called")
	}
	pub.fail = 0
	pub.take()
	if err := syncRoute(ctx, r, mix, rs); err != nil {
		t.Fatal(err)
	}
	if unsafe.SliceData(r.pipe.hdr.slab) == slab1 {
		t.Fatal("the batch after a failed one reused its slab")
	}
	for i := range pub.kept {
		if g, w := &pub.kept[i], &pub.keptCopy[i]; !bytes.Equal(g.Key, w.Key) || !bytes.Equal(g.Value, w.Value) || !sameHeaders(g.Headers, w.Headers) {
			t.Fatalf("message %d of the failed publish changed after it returned:\n%v\nwas\n%v", i, g.Headers, w.Headers)
		}
	}
	if n := len(pub.take()); n != len(mix) {
		t.Fatalf("%d events published, want %d", n, len(mix))
	}
}

// syncRoute decides and publishes one batch through the router's pipeline
// synchronously (the path replay runs), without committing.
func syncRoute(ctx context.Context, r *Router, msgs []stream.Message, rs *rules.Ruleset) error {
	b, err := r.pipe.Decide(ctx, msgs, rs)
	if err != nil {
		return err
	}
	return r.pipe.Publish(ctx, b)
}
