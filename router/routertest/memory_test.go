package routertest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/residency-router/residency/router"
)

func TestMemoryConformance(t *testing.T) {
	b := NewBroker()
	var n atomic.Int64
	TestPubSub(t, Harness{
		NewTopic: func(t *testing.T, partitions int) string {
			name := fmt.Sprintf("topic-%d", n.Add(1))
			b.CreateTopic(name, partitions)
			return name
		},
		NewPublisher: func(t *testing.T) router.Publisher { return b.Publisher() },
		NewSubscriber: func(t *testing.T, group string, topics ...string) (router.Subscriber, func()) {
			s := b.Subscriber(group, topics...)
			return s, func() { _ = s.Close() }
		},
		NewGroup: func(t *testing.T) string { return fmt.Sprintf("group-%d", n.Add(1)) },
	})
}

// sharingPublisher breaks the Publisher memory contract: it stores the
// messages it is given in the broker without copying their keys, values
// and headers, as a careless in-memory fake or an asynchronous producer
// would.
type sharingPublisher struct{ b *Broker }

func (p sharingPublisher) Publish(_ context.Context, msgs ...router.Message) error {
	p.b.mu.Lock()
	defer p.b.mu.Unlock()
	for _, m := range msgs {
		parts, ok := p.b.topics[m.Topic]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownTopic, m.Topic)
		}
		m.Partition, m.Offset = 0, int64(len(parts[0]))
		parts[0] = append(parts[0], m) // shares m.Key, m.Value, m.Headers
	}
	close(p.b.notify)
	p.b.notify = make(chan struct{})
	return nil
}

func (sharingPublisher) Close() error { return nil }

// TestNoReferenceCheckCatchesSharing checks that the conformance suite's
// NoReferenceAfterPublish check fails for a publisher that keeps references
// to the caller's memory, and passes for the broker's own, which copies.
func TestNoReferenceCheckCatchesSharing(t *testing.T) {
	for _, c := range []struct {
		name    string
		pub     func(*Broker) router.Publisher
		wantErr bool
	}{
		{"copying", func(b *Broker) router.Publisher { return b.Publisher() }, false},
		{"sharing", func(b *Broker) router.Publisher { return sharingPublisher{b} }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := NewBroker()
			b.CreateTopic("t", 1)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			want, err := publishReusingMemory(ctx, c.pub(b), "t")
			if err != nil {
				t.Fatal(err)
			}
			got := fetchN(t, ctx, b.Subscriber("g", "t"), len(want))
			err = sameRecords(got, want)
			if c.wantErr && err == nil {
				t.Fatal("the check passed a publisher that keeps references to the caller's memory")
			}
			if !c.wantErr && err != nil {
				t.Fatalf("the check failed the copying broker: %v", err)
			}
			if err != nil {
				t.Logf("the check reports: %v", err)
			}
		})
	}
}
