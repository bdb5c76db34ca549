package streamtest

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/residency-router/residency/stream"
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
		NewPublisher: func(t *testing.T) stream.Publisher { return b.Publisher() },
		NewSubscriber: func(t *testing.T, group string, topics ...string) (stream.Subscriber, func()) {
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

func (p sharingPublisher) Publish(_ context.Context, msgs ...stream.Message) error {
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
		pub     func(*Broker) stream.Publisher
		wantErr bool
	}{
		{"copying", func(b *Broker) stream.Publisher { return b.Publisher() }, false},
		{"sharing", func(b *Broker) stream.Publisher { return sharingPublisher{b} }, true},
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

// collapse returns b, or nil when b is empty: what a client that cannot
// tell an empty key, value or header value from a null one hands over.
func collapse(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// collapsed returns m with every empty key, value and header value made
// null.
func collapsed(m stream.Message) stream.Message {
	m.Key, m.Value = collapse(m.Key), collapse(m.Value)
	hs := make([]stream.Header, len(m.Headers))
	for i, h := range m.Headers {
		hs[i] = stream.Header{Key: h.Key, Value: collapse(h.Value)}
	}
	if m.Headers != nil {
		m.Headers = hs
	}
	return m
}

// collapsingPublisher writes empty keys, values and header values as null.
type collapsingPublisher struct{ *Publisher }

func (p collapsingPublisher) Publish(ctx context.Context, msgs ...stream.Message) error {
	out := make([]stream.Message, len(msgs))
	for i, m := range msgs {
		out[i] = collapsed(m)
	}
	return p.Publisher.Publish(ctx, out...)
}

// collapsingSubscriber reads empty keys, values and header values as null,
// as kafka-go's Reader does.
type collapsingSubscriber struct{ *Subscriber }

func (s collapsingSubscriber) Fetch(ctx context.Context) (stream.Message, error) {
	m, err := s.Subscriber.Fetch(ctx)
	return collapsed(m), err
}

// TestBytesExactCheckCatchesCollapse checks that the conformance suite's
// BytesExact checks fail for adapters that write or read an empty key,
// value or header value as null, and pass for the broker's own.
func TestBytesExactCheckCatchesCollapse(t *testing.T) {
	for _, c := range []struct {
		name    string
		pub     func(*Broker) stream.Publisher
		sub     func(*Broker, string) stream.Subscriber
		wantErr bool
	}{
		{"exact", func(b *Broker) stream.Publisher { return b.Publisher() },
			func(b *Broker, topic string) stream.Subscriber { return b.Subscriber("g", topic) }, false},
		{"collapsing publisher", func(b *Broker) stream.Publisher { return collapsingPublisher{b.Publisher()} },
			func(b *Broker, topic string) stream.Subscriber { return b.Subscriber("g", topic) }, true},
		{"collapsing subscriber", func(b *Broker) stream.Publisher { return b.Publisher() },
			func(b *Broker, topic string) stream.Subscriber { return collapsingSubscriber{b.Subscriber("g", topic)} }, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := NewBroker()
			b.CreateTopic("one", 1)
			b.CreateTopic("three", 3)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			want, sent := exactRecords("one"), keyedRecords("three")
			if err := c.pub(b).Publish(ctx, append(slices.Clone(want), sent...)...); err != nil {
				t.Fatal(err)
			}
			errOne := sameRecords(fetchN(t, ctx, c.sub(b, "one"), len(want)), want)
			errThree := sameKeyOrder(fetchN(t, ctx, c.sub(b, "three"), len(sent)), sent)
			if c.wantErr && (errOne == nil || errThree == nil) {
				t.Fatalf("the checks passed an adapter that collapses empty to null: exact records: %v; keyed records: %v", errOne, errThree)
			}
			if !c.wantErr && (errOne != nil || errThree != nil) {
				t.Fatalf("the checks failed the exact broker: %v; %v", errOne, errThree)
			}
			if errOne != nil {
				t.Logf("the checks report: %v; %v", errOne, errThree)
			}
		})
	}
}
