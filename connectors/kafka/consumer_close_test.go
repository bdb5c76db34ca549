package kafka

import (
	"context"
	"testing"
	"time"
)

// TestConsumerCloseRunsOnRevokeOfLateGeneration: a generation handed over
// just as Close begins (kafka-go's Close ends it before the consumer has
// started its revoke function, which kafka-go then does not wait for) is
// still revoked, OnRevoke included, before Close returns.
func TestConsumerCloseRunsOnRevokeOfLateGeneration(t *testing.T) {
	c := fakeKafka(t, 1, 1, "t")
	closing := make(chan struct{})
	beforeGenerationStart = func() {
		<-closing
		// Give kafka-go's Close the time to end the generation first (on a
		// slow host the order may not happen: the test then passes anyway).
		time.Sleep(100 * time.Millisecond)
	}
	t.Cleanup(func() { beforeGenerationStart = nil })
	revoked := make(chan []TopicPartition, 4)
	cons, err := NewConsumer(ConsumerConfig{Cluster: Cluster{Name: "fake", Brokers: c.ListenAddrs()}, GroupID: "g",
		Topics: []string{"t"}, OnRevoke: func(_ context.Context, ps []TopicPartition) { revoked <- ps }})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !cons.Joined() {
		if time.Now().After(deadline) {
			t.Fatal("not joined within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(closing)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cons.Close(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case ps := <-revoked:
		if len(ps) != 1 || ps[0] != (TopicPartition{"t", 0}) {
			t.Fatalf("revoked %v, want t[0]", ps)
		}
	default:
		t.Fatal("Close returned before OnRevoke ran for the generation handed over as it began")
	}
}
