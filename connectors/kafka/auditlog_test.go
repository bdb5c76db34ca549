package kafka_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
)

// TestAuditLog appends audit records on both clusters: each Append
// returns once its records are in the topic, in order, each once; a
// record over MaxRecordBytes is refused; a topic that does not exist
// fails Append with an error naming it.
func TestAuditLog(t *testing.T) {
	for _, k := range []*testenv.Kafka{testenv.KafkaA(t), testenv.KafkaB(t)} {
		t.Run("cluster "+k.Name, func(t *testing.T) {
			t.Parallel()
			testAuditLog(t, k)
		})
	}
}

func testAuditLog(t *testing.T, k *testenv.Kafka) {
	ctx := testenv.Context(t, time.Minute)
	topic := k.Topic(t, "audit", 1)
	l, err := kafka.NewAuditLog(kafka.AuditLogConfig{Cluster: kafka.Cluster{Name: k.Name, Brokers: k.Brokers}, Topic: topic,
		MaxRecordBytes: 4 << 10, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	var sent [][]byte
	for call := range 5 {
		var recs [][]byte
		for i := range 3 {
			recs = append(recs, fmt.Appendf([]byte{0x01}, "call-%d-record-%d", call, i))
		}
		if err := l.Append(ctx, recs...); err != nil {
			t.Fatalf("append %d: %v", call, err)
		}
		sent = append(sent, recs...)
		// Acknowledged means readable: the records are there now.
		if got := k.ReadTopic(t, ctx, topic); len(got) != len(sent) {
			t.Fatalf("after append %d: %d records in the topic, want %d", call, len(got), len(sent))
		}
	}
	got := k.ReadTopic(t, ctx, topic)
	for i, r := range got {
		if r.Partition != 0 || r.Offset != int64(i) || !bytes.Equal(r.Value, sent[i]) {
			t.Fatalf("record %d: partition %d offset %d value %q, want 0/%d %q", i, r.Partition, r.Offset, r.Value, i, sent[i])
		}
	}
	if err := l.Append(ctx, make([]byte, 5<<10)); !errors.Is(err, kafka.ErrAuditRecordTooLarge) {
		t.Errorf("append of a record over MaxRecordBytes: %v, want ErrAuditRecordTooLarge", err)
	}

	missing := testenv.Name(t, "no-such-audit")
	m, err := kafka.NewAuditLog(kafka.AuditLogConfig{Cluster: kafka.Cluster{Name: k.Name, Brokers: k.Brokers}, Topic: missing,
		Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	err = m.Append(ctx, []byte{0x01})
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("append to a missing topic: %v, want an error naming %s", err, missing)
	}
}
