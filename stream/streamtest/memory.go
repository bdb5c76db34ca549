// Package streamtest provides an in-memory Kafka stand-in for tests
// (Broker) and the conformance suite every stream.Publisher and
// stream.Subscriber adapter must pass (TestPubSub). It is for tests only:
// no package the residency binary links imports it.
package streamtest

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"
	"time"

	"github.com/residency-router/residency/stream"
)

// ErrUnknownTopic is returned by a memory publisher for a topic that was not
// created.
var ErrUnknownTopic = errors.New("streamtest: unknown topic")

// ErrClosed is returned by a closed memory subscriber or publisher.
var ErrClosed = errors.New("streamtest: closed")

type tp struct {
	topic     string
	partition int
}

// Broker is an in-memory, single-process stand-in for one Kafka cluster:
// topics with partitions, key-hash partitioning, and consumer groups with
// committed offsets. Every member of a group reads every partition (there is
// no rebalancing). Records are kept as given, a null (nil) key, value or
// header value apart from an empty one, and read back as copies of those.
// It is safe for concurrent use.
type Broker struct {
	mu      sync.Mutex
	notify  chan struct{} // closed and replaced on every publish
	topics  map[string][][]stream.Message
	commits map[string]map[tp]int64 // group -> partition -> next offset
}

// NewBroker returns an empty broker.
func NewBroker() *Broker {
	return &Broker{notify: make(chan struct{}), topics: map[string][][]stream.Message{}, commits: map[string]map[tp]int64{}}
}

// CreateTopic creates a topic with the given number of partitions (at least
// one). Creating an existing topic does nothing.
func (b *Broker) CreateTopic(name string, partitions int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.topics[name]; !ok {
		b.topics[name] = make([][]stream.Message, max(partitions, 1))
	}
}

// Records returns a copy of every record of topic, partition by partition in
// offset order.
func (b *Broker) Records(topic string) []stream.Message {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []stream.Message
	for _, p := range b.topics[topic] {
		out = append(out, p...)
	}
	return out
}

// Committed returns the next offset group will read from partition of topic
// (0 when nothing was committed).
func (b *Broker) Committed(group, topic string, partition int) int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.commits[group][tp{topic, partition}]
}

// Publisher returns a publisher to this broker.
func (b *Broker) Publisher() *Publisher { return &Publisher{b: b} }

// Subscriber returns a member of group reading topics.
func (b *Broker) Subscriber(group string, topics ...string) *Subscriber {
	return &Subscriber{b: b, group: group, topics: topics, pos: map[tp]int64{}}
}

// Publisher is an in-memory stream.Publisher.
type Publisher struct {
	b      *Broker
	mu     sync.Mutex
	closed bool
}

// Publish appends msgs to their topics; a record's partition is the FNV-1a
// hash of its key modulo the partition count. It fails, writing nothing, if
// any topic does not exist.
func (p *Publisher) Publish(ctx context.Context, msgs ...stream.Message) error {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	b := p.b
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range msgs {
		if _, ok := b.topics[m.Topic]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownTopic, m.Topic)
		}
	}
	now := time.Now()
	for _, m := range msgs {
		parts := b.topics[m.Topic]
		h := fnv.New32a()
		_, _ = h.Write(m.Key)
		n := int(h.Sum32() % uint32(len(parts)))
		m.Partition, m.Offset = n, int64(len(parts[n]))
		m.Key, m.Value = slices.Clone(m.Key), slices.Clone(m.Value)
		m.Headers = cloneHeaders(m.Headers)
		if m.Time.IsZero() {
			m.Time = now
		}
		parts[n] = append(parts[n], m)
	}
	close(b.notify)
	b.notify = make(chan struct{})
	return nil
}

// Close makes later Publish calls fail.
func (p *Publisher) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	return nil
}

func cloneHeaders(hs []stream.Header) []stream.Header {
	if hs == nil {
		return nil
	}
	out := make([]stream.Header, len(hs))
	for i, h := range hs {
		out[i] = stream.Header{Key: h.Key, Value: slices.Clone(h.Value)}
	}
	return out
}

// Subscriber is an in-memory stream.Subscriber. It starts each partition at
// the group's committed offset.
type Subscriber struct {
	b      *Broker
	group  string
	topics []string

	mu     sync.Mutex
	pos    map[tp]int64
	next   int // round-robin start over partitions
	closed bool
}

// Fetch returns the next record of any of the subscribed partitions, waiting
// for one until ctx is done.
func (s *Subscriber) Fetch(ctx context.Context) (stream.Message, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return stream.Message{}, ErrClosed
		}
		s.b.mu.Lock()
		m, ok := s.poll()
		wait := s.b.notify
		s.b.mu.Unlock()
		s.mu.Unlock()
		if ok {
			return m, nil
		}
		select {
		case <-ctx.Done():
			return stream.Message{}, ctx.Err()
		case <-wait:
		case <-time.After(50 * time.Millisecond): // topics created later
		}
	}
}

// poll must be called with s.mu and s.b.mu held.
func (s *Subscriber) poll() (stream.Message, bool) {
	var all []tp
	for _, t := range s.topics {
		for p := range s.b.topics[t] {
			all = append(all, tp{t, p})
		}
	}
	for i := range all {
		k := all[(s.next+i)%len(all)]
		off, seen := s.pos[k]
		if !seen {
			off = s.b.commits[s.group][k]
		}
		part := s.b.topics[k.topic][k.partition]
		if off < int64(len(part)) {
			s.pos[k] = off + 1
			s.next = (s.next + i + 1) % len(all)
			m := part[off]
			m.HighWaterMark = int64(len(part))
			return m, true
		}
	}
	return stream.Message{}, false
}

// Commit records, per partition, the offset after the highest given record.
func (s *Subscriber) Commit(ctx context.Context, msgs ...stream.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	c := s.b.commits[s.group]
	if c == nil {
		c = map[tp]int64{}
		s.b.commits[s.group] = c
	}
	for _, m := range msgs {
		k := tp{m.Topic, m.Partition}
		if m.Offset+1 > c[k] {
			c[k] = m.Offset + 1
		}
	}
	return nil
}

// Close makes later calls fail; uncommitted records will be read again by
// the next member of the group.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}
