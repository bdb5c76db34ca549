package kafka_test

import (
	"fmt"
	"testing"
	"time"

	segkafka "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

// javaPartitionsOf6 are the partitions the Java client (kafka-clients
// 4.1.1, BuiltInPartitioner.partitionForKey) gives these keys in a topic
// of 6 partitions; see balancer_test.go for how they were computed.
var javaPartitionsOf6 = map[string]int{
	"": 3, "a": 4, "abcd": 2, "user-1": 2, "user-42": 4, "u-1": 1, "kafka": 4, "residency": 4, "été": 1,
}

// TestDefaultPartitionerAgreesWithOtherClients: on a real cluster, the
// Writer and the Producer put every key, by default, on the partition the
// Java client computes and franz-go's default producer writes it to (both
// murmur2); with kafka.partitioner fnv1a they put it where kafka-go's Hash
// balancer does (residency's placement before murmur2).
func TestDefaultPartitionerAgreesWithOtherClients(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	cluster := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	keys := make([]string, 0, 60)
	for key := range javaPartitionsOf6 {
		keys = append(keys, key)
	}
	for i := range 50 {
		keys = append(keys, fmt.Sprintf("user-%d", i*7919))
	}
	msgs := func(topic string) []stream.Message {
		out := make([]stream.Message, len(keys))
		for i, key := range keys {
			out[i] = stream.Message{Topic: topic, Key: []byte(key), Value: []byte(key)}
		}
		return out
	}
	// partitionsOf reads topic back: the partition of every key.
	partitionsOf := func(t *testing.T, topic string) map[string]int {
		got := map[string]int{}
		for _, r := range k.ReadTopic(t, ctx, topic) {
			got[string(r.Key)] = int(r.Partition)
		}
		if len(got) != len(keys) {
			t.Fatalf("%s holds %d keys, want %d", topic, len(got), len(keys))
		}
		return got
	}

	// franz-go's default producer.
	franzTopic := k.Topic(t, "part-franz", 6)
	cl := k.Franz(t)
	for _, m := range msgs(franzTopic) {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: m.Topic, Key: m.Key, Value: m.Value}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	franz := partitionsOf(t, franzTopic)
	for key, want := range javaPartitionsOf6 {
		if franz[key] != want {
			t.Fatalf("franz-go put %q on %d, the Java client on %d: the vectors are wrong", key, franz[key], want)
		}
	}

	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	writerTopic := k.Topic(t, "part-writer", 6)
	if err := w.Publish(ctx, msgs(writerTopic)...); err != nil {
		t.Fatal(err)
	}
	p, err := kafka.NewProducer(kafka.ProducerConfig{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	producerTopic := k.Topic(t, "part-producer", 6)
	if err := p.Publish(ctx, msgs(producerTopic)...); err != nil {
		t.Fatal(err)
	}
	for name, topic := range map[string]string{"Writer": writerTopic, "Producer": producerTopic} {
		got := partitionsOf(t, topic)
		for _, key := range keys {
			if got[key] != franz[key] {
				t.Errorf("%s put %q on partition %d, franz-go (murmur2) on %d", name, key, got[key], franz[key])
			}
		}
	}

	// fnv1a: kafka-go's Hash.
	var h segkafka.Hash
	fnvW, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cluster, Balancer: &kafka.HashBalancer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer fnvW.Close()
	fnvP, err := kafka.NewProducer(kafka.ProducerConfig{Cluster: cluster, Balancer: &kafka.HashBalancer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer fnvP.Close()
	fnvWTopic, fnvPTopic := k.Topic(t, "part-fnv-w", 6), k.Topic(t, "part-fnv-p", 6)
	if err := fnvW.Publish(ctx, msgs(fnvWTopic)...); err != nil {
		t.Fatal(err)
	}
	if err := fnvP.Publish(ctx, msgs(fnvPTopic)...); err != nil {
		t.Fatal(err)
	}
	moved := 0
	for name, topic := range map[string]string{"Writer": fnvWTopic, "Producer": fnvPTopic} {
		got := partitionsOf(t, topic)
		for _, key := range keys {
			if want := h.Balance(segkafka.Message{Key: []byte(key)}, 0, 1, 2, 3, 4, 5); got[key] != want {
				t.Errorf("%s with fnv1a put %q on partition %d, kafka-go's Hash on %d", name, key, got[key], want)
			}
			if got[key] != franz[key] {
				moved++
			}
		}
	}
	if moved == 0 {
		t.Fatal("fnv1a and murmur2 placed every key alike: the test cannot tell them apart")
	}
}
