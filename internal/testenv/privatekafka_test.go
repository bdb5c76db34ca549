package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestPrivateKafkaKillAndRestart: a private broker keeps its topics and
// their records across a kill -9 and a restart on the same port.
func TestPrivateKafkaKillAndRestart(t *testing.T) {
	t.Parallel()
	k := NewPrivateKafka(t, "b")
	topic := k.Topic(t, "private", 1)
	ctx := Context(t, 60*time.Second)
	w := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: topic, RequiredAcks: kafka.RequireAll}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("before")}); err != nil {
		t.Fatal(err)
	}
	k.Kill()
	if err := dialAny(k.Brokers); err == nil {
		t.Fatal("the broker still answers after Kill")
	}
	k.Start()
	// A writer that knew the broker before the crash may need a few tries.
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		w2 := &kafka.Writer{Addr: kafka.TCP(k.Brokers...), Topic: topic, RequiredAcks: kafka.RequireAll}
		err = w2.WriteMessages(ctx, kafka.Message{Value: []byte("after")})
		_ = w2.Close()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: k.Brokers, Topic: topic, Partition: 0})
	defer r.Close()
	for _, want := range []string{"before", "after"} {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		m, err := r.ReadMessage(rctx)
		cancel()
		if err != nil || string(m.Value) != want {
			t.Fatalf("read %q, %v; want %q", m.Value, err, want)
		}
	}
}
