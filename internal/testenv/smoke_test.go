package testenv_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/residency-router/residency/internal/testenv"
)

// TestSmokeKafka proves the harness: kafka-go produces (acks from all
// replicas) and consumes through a consumer group with committed offsets, on
// both clusters of the test environment and on kfake.
func TestSmokeKafka(t *testing.T) {
	t.Run("cluster_a", func(t *testing.T) {
		t.Parallel()
		k := testenv.KafkaA(t)
		t.Logf("cluster a: %s, Apache Kafka %s (real=%v)", strings.Join(k.Brokers, ","), k.Version, k.Real)
		roundTrip(t, k.Brokers, k.Topic(t, "smoke", 2))
	})
	t.Run("cluster_b", func(t *testing.T) {
		t.Parallel()
		k := testenv.KafkaB(t)
		t.Logf("cluster b: %s, Apache Kafka %s (real=%v)", strings.Join(k.Brokers, ","), k.Version, k.Real)
		roundTrip(t, k.Brokers, k.Topic(t, "smoke", 2))
	})
	t.Run("kfake", func(t *testing.T) {
		t.Parallel()
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		topic := testenv.Name(t, "smoke")
		ctx := testenv.Context(t, 30*time.Second)
		if err := testenv.CreateTopics(ctx, c.ListenAddrs(), 2, topic); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c.ListenAddrs(), topic)
	})
}

func roundTrip(t *testing.T, brokers []string, topic string) {
	t.Helper()
	ctx := testenv.Context(t, 90*time.Second)
	const n = 20
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	var msgs []kafka.Message
	for i := range n {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "k%d", i%4), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}

	group := testenv.Name(t, "g")
	seen := consume(t, ctx, brokers, topic, group, n)
	if len(seen) != n {
		t.Fatalf("consumed %d distinct values, want %d", len(seen), n)
	}

	// The group's committed offsets cover everything: a new member of the
	// same group gets nothing more.
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1}}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	var committed int64
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("offset fetch partition %d: %v", p.Partition, p.Error)
		}
		committed += p.CommittedOffset
	}
	if committed != n {
		t.Fatalf("committed offsets add up to %d, want %d", committed, n)
	}
}

func consume(t *testing.T, ctx context.Context, brokers []string, topic, group string, n int) map[string]bool {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           brokers,
		GroupID:           group,
		Topic:             topic,
		StartOffset:       kafka.FirstOffset,
		MaxWait:           100 * time.Millisecond,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  5 * time.Second,
	})
	defer r.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d messages: %v", len(seen), err)
		}
		seen[string(m.Value)] = true
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	return seen
}

func TestSmokeRedis(t *testing.T) {
	t.Parallel()
	r := testenv.NewRedis(t)
	c := r.Client(t)
	ctx := testenv.Context(t, 10*time.Second)
	key := r.Prefix + "smoke"
	if err := c.Set(ctx, key, "hello", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != "hello" {
		t.Fatalf("get = %q, %v; want hello", got, err)
	}
	if !r.Real {
		t.Logf("miniredis at %s", r.Addr)
		return
	}
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			t.Logf("redis %s at %s (real=%v)", strings.TrimSpace(v), r.Addr, r.Real)
		}
	}
}

func TestSmokePostgres(t *testing.T) {
	t.Parallel()
	pg := testenv.NewPostgres(t)
	ctx := testenv.Context(t, 20*time.Second)
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE smoke (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO smoke VALUES (1, 'one'), (2, 'two')"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var n int
	var schema, version string
	if err := conn.QueryRow(ctx, "SELECT count(*), current_schema(), current_setting('server_version') FROM smoke").Scan(&n, &schema, &version); err != nil {
		t.Fatalf("query: %v", err)
	}
	if n != 2 || schema != pg.Schema {
		t.Fatalf("count=%d schema=%q; want 2 rows in schema %q", n, schema, pg.Schema)
	}
	t.Logf("postgresql %s, schema %s", version, schema)
}
