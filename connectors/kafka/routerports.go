package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
)

// RouterConsumer adapts a Consumer to router.BatchConsumer: offsets as
// router.Offset, and ErrNotAssigned as router.ErrNotAssigned. The
// consumer's OnRevoke should be RevokeHook(rt.Revoked).
type RouterConsumer struct {
	c *Consumer
}

// RouterConsumer returns c as a router.BatchConsumer.
func (c *Consumer) RouterConsumer() *RouterConsumer { return &RouterConsumer{c} }

// Poll is Consumer.Poll.
func (r *RouterConsumer) Poll(ctx context.Context, dst []stream.Message, max int) ([]stream.Message, error) {
	return r.c.Poll(ctx, dst, max)
}

// Commit is Consumer.Commit; its error wraps router.ErrNotAssigned (too)
// for partitions not held.
func (r *RouterConsumer) Commit(ctx context.Context, offsets ...router.Offset) error {
	os := make([]Offset, len(offsets))
	for i, o := range offsets {
		os[i] = Offset{Topic: o.Topic, Partition: o.Partition, Next: o.Next}
	}
	err := r.c.Commit(ctx, os...)
	if errors.Is(err, ErrNotAssigned) {
		return fmt.Errorf("%w: %w", router.ErrNotAssigned, err)
	}
	return err
}

// Joined is Consumer.Joined.
func (r *RouterConsumer) Joined() bool { return r.c.Joined() }

// Err is Consumer.Err.
func (r *RouterConsumer) Err() error { return r.c.Err() }

// RevokeHook returns a ConsumerConfig.OnRevoke that calls f (the router's
// Revoked) with the partitions as router.Partition; f is read at each
// call, so the router may be built after the consumer.
func RevokeHook(f *func(context.Context, []router.Partition)) func(context.Context, []TopicPartition) {
	return func(ctx context.Context, tps []TopicPartition) {
		if f == nil || *f == nil {
			return
		}
		parts := make([]router.Partition, len(tps))
		for i, tp := range tps {
			parts[i] = router.Partition{Topic: tp.Topic, Partition: tp.Partition}
		}
		(*f)(ctx, parts)
	}
}

// RouterProducer adapts a Producer to router.AsyncProducer,
// router.RecordCopier and router.TopicChecker: a produce to a topic the
// cluster lacks fails with a router.MissingTopicError naming it.
type RouterProducer struct {
	p *Producer
}

// RouterProducer returns p as a router.AsyncProducer.
func (p *Producer) RouterProducer() *RouterProducer { return &RouterProducer{p} }

// Produce is Producer.Produce with the ack as a router.ProduceAck.
func (r *RouterProducer) Produce(ctx context.Context, msgs []stream.Message, done func(router.ProduceAck)) error {
	err := r.p.Produce(ctx, msgs, func(a Ack) {
		done(router.ProduceAck{Err: a.Err, Partitions: a.Partitions, Offsets: a.Offsets})
	})
	if err != nil && errors.Is(err, kafka.UnknownTopicOrPartition) {
		seen := map[string]bool{}
		for i := range msgs {
			t := msgs[i].Topic
			if seen[t] {
				continue
			}
			seen[t] = true
			if cerr := r.CheckTopics(ctx, []string{t}); errors.Is(cerr, router.ErrTopicMissing) {
				return cerr
			}
		}
	}
	return err
}

// CopiesRecords returns true: Produce encodes the records into the
// producer's own buffers before it returns and keeps no reference to msgs
// (Producer.Produce), so the router may reuse their memory at once.
func (r *RouterProducer) CopiesRecords() bool { return true }

// Err is Producer.Err.
func (r *RouterProducer) Err() error { return r.p.Err() }

// CheckTopics asks the cluster (once per topic the producer has not seen)
// whether topics exist: a router.MissingTopicError for the first that does
// not.
func (r *RouterProducer) CheckTopics(ctx context.Context, topics []string) error {
	for _, t := range topics {
		_, err := r.p.partitionCounts(ctx, []stream.Message{{Topic: t}})
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return &router.MissingTopicError{Topic: t, Err: err}
		}
		if err != nil {
			return err
		}
	}
	return nil
}
