package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
)

// TestRouterProducerNamesMissingTopic: a produce to (or a check of) a
// topic the cluster lacks fails at once with a router.MissingTopicError
// naming it; an existing topic produces and acknowledges with offsets.
func TestRouterProducerNamesMissingTopic(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	topic := k.Topic(t, "rp", 2)
	missing := testenv.Name(t, "missing")
	rp := newProducer(t, kafka.ProducerConfig{Cluster: kafka.Cluster{Name: k.Name, Brokers: k.Brokers}}).RouterProducer()
	var _ router.AsyncProducer = rp
	var _ router.TopicChecker = rp

	err := rp.Produce(ctx, []stream.Message{{Topic: topic, Value: []byte("a")}, {Topic: missing, Value: []byte("b")}},
		func(router.ProduceAck) { t.Error("done called for a refused produce") })
	var mt *router.MissingTopicError
	if !errors.As(err, &mt) || mt.Topic != missing || !errors.Is(err, router.ErrTopicMissing) {
		t.Fatalf("Produce to a missing topic = %v, want a MissingTopicError naming %s", err, missing)
	}
	if err := rp.CheckTopics(ctx, []string{topic, missing}); !errors.As(err, &mt) || mt.Topic != missing {
		t.Fatalf("CheckTopics = %v, want %s missing", err, missing)
	}
	if err := rp.CheckTopics(ctx, []string{topic}); err != nil {
		t.Fatalf("CheckTopics(existing) = %v", err)
	}
	acks := make(chan router.ProduceAck, 1)
	if err := rp.Produce(ctx, []stream.Message{{Topic: topic, Key: []byte("k"), Value: []byte("v")}}, func(a router.ProduceAck) { acks <- a }); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-acks:
		if a.Err != nil || len(a.Offsets) != 1 || a.Offsets[0] < 0 {
			t.Fatalf("ack = %+v, want one offset", a)
		}
	case <-ctx.Done():
		t.Fatal("no ack")
	}
}

// TestRouterConsumerNotAssigned: committing a partition the member does
// not hold fails with router.ErrNotAssigned (the router drops it rather
// than retry); the revoke hook hands the partitions over as
// router.Partition.
func TestRouterConsumerNotAssigned(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	topic := k.Topic(t, "rc", 1)
	revoked := make(chan []router.Partition, 4)
	hook := func(_ context.Context, ps []router.Partition) { revoked <- ps }
	c := newConsumer(t, kafka.ConsumerConfig{Cluster: kafka.Cluster{Name: k.Name, Brokers: k.Brokers}, GroupID: testenv.Name(t, "g"),
		Topics: []string{topic}, OnRevoke: kafka.RevokeHook(&hook)})
	rc := c.RouterConsumer()
	var _ router.BatchConsumer = rc
	testenv.Eventually(t, 30*time.Second, "joined", rc.Joined)
	err := rc.Commit(ctx, router.Offset{Topic: topic + "-other", Partition: 0, Next: 1})
	if !errors.Is(err, router.ErrNotAssigned) {
		t.Fatalf("Commit of a partition not held = %v, want router.ErrNotAssigned", err)
	}
	if err := rc.Commit(ctx, router.Offset{Topic: topic, Partition: 0, Next: 0}); err != nil {
		t.Fatalf("Commit of a held partition = %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.Close(cctx); err != nil {
		t.Fatal(err)
	}
	select {
	case ps := <-revoked:
		if len(ps) != 1 || ps[0] != (router.Partition{Topic: topic, Partition: 0}) {
			t.Fatalf("revoked %v, want %s[0]", ps, topic)
		}
	default:
		t.Fatal("the revoke hook was not called at Close")
	}
}
