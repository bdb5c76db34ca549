package routertest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Ledger checks the router.Ledger contract (router/ports.go) on l, with
// events decided under rs: AppendLeaf, called from several goroutines at
// once, appends one non-empty leaf to dst and leaves dst's bytes before it
// alone; Append of no leaves returns nil; Append makes the leaves it is
// given durable in order, and what it made durable does not change when
// the caller reuses the memory of the leaves and the events afterwards
// (Append and AppendLeaf keep no reference to them). durable returns every
// leaf l has made durable so far, in order, each as AppendLeaf encoded it;
// other leaves (ruleset leaves) may be among them. Run it under -race.
func Ledger(t testing.TB, l router.Ledger, rs *rules.Ruleset, durable func() [][]byte) {
	t.Helper()
	ctx := context.Background()
	if err := l.Append(ctx, []*rules.Ruleset{rs}, nil); err != nil {
		t.Fatalf("Append of no leaves: %v", err)
	}
	const n = 16
	settled := make([]router.Settled, n)
	for i := range settled {
		m := &stream.Message{Topic: "ingest", Partition: i % 3, Offset: int64(1000 + i),
			Key: fmt.Appendf(nil, "key-%d", i), Value: fmt.Appendf(nil, "value-%d", i)}
		ev := &router.Event{Msg: m, Decision: router.Decision{Outcome: router.Quarantined, Reason: router.ReasonUnknownCountry},
			Fields: schemas.Fields{UserID: fmt.Appendf(nil, "user-%d", i)}}
		settled[i] = router.Settled{Event: ev, Ruleset: rs, Cluster: "ingest", Topic: "residency.quarantine",
			Partition: int32(i % 2), Offset: int64(5000 + i)}
	}
	prefix := []byte("prefix")
	leaves := make([][]byte, n)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				dst := append(make([]byte, 0, 8), prefix...)
				b, err := l.AppendLeaf(dst, &settled[i])
				if err != nil {
					t.Errorf("AppendLeaf of event %d: %v", i, err)
					return
				}
				if !bytes.Equal(b[:len(prefix)], prefix) || len(b) == len(prefix) {
					t.Errorf("AppendLeaf of event %d changed dst's bytes or appended nothing", i)
					return
				}
				leaves[i] = b[len(prefix):]
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	want := make([][]byte, n)
	for i, b := range leaves {
		want[i] = bytes.Clone(b)
	}
	if err := l.Append(ctx, []*rules.Ruleset{rs}, leaves); err != nil {
		t.Fatalf("Append: %v", err)
	}
	// The caller reuses the memory of the leaves and the events.
	for i := range leaves {
		for k := range leaves[i] {
			leaves[i][k] = 0xEE
		}
		for _, b := range [][]byte{settled[i].Event.Msg.Key, settled[i].Event.Msg.Value, settled[i].Event.Fields.UserID} {
			for k := range b {
				b[k] = 'x'
			}
		}
	}
	got := durable()
	k := 0
	for _, b := range got {
		if k < n && bytes.Equal(b, want[k]) {
			k++
		}
	}
	if k != n {
		t.Fatalf("%d of the %d leaves appended are durable, in order, as AppendLeaf encoded them (durable holds %d leaves)", k, n, len(got))
	}
}
