package kafka_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/residency-router/residency/audit/audittest"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/twmb/franz-go/pkg/kgo"
)

func auditFeedUnderTest(k *testenv.Kafka) func(t *testing.T) audittest.FeedUnderTest {
	return func(t *testing.T) audittest.FeedUnderTest {
		topic := k.Topic(t, "auditfeed", 3)
		f, err := kafka.NewAuditFeed(kafka.Cluster{Name: k.Name, Brokers: k.Brokers}, topic)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = f.Close() })
		cl := k.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()), kgo.DefaultProduceTopic(topic))
		return audittest.FeedUnderTest{Feed: f, Partitions: 3,
			Produce: func(t testing.TB, p int32, v []byte) int64 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				r, err := cl.ProduceSync(ctx, &kgo.Record{Partition: p, Value: v}).First()
				if err != nil {
					t.Errorf("produce to %s/%d: %v", topic, p, err)
					return -1
				}
				return r.Offset
			}}
	}
}

func TestAuditFeedClusterA(t *testing.T) {
	audittest.TestFeed(t, auditFeedUnderTest(testenv.KafkaA(t)))
}

func TestAuditFeedClusterB(t *testing.T) {
	audittest.TestFeed(t, auditFeedUnderTest(testenv.KafkaB(t)))
}

// A re-read of offsets the broker deleted fails: the integrator cannot redo
// a batch from records that are gone.
func TestAuditFeedReadDeletedFails(t *testing.T) {
	k := testenv.KafkaA(t)
	fut := auditFeedUnderTest(k)(t)
	for i := 0; i < 4; i++ {
		fut.Produce(t, 0, []byte{byte(i)})
	}
	f := fut.Feed.(*kafka.AuditFeed)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := kafka.NewAdmin(kafka.Cluster{Name: k.Name, Brokers: k.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.DeleteRecords(ctx, f.Topic(), map[int]int64{0: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Read(ctx, 0, 0, 4); !errors.Is(err, kafka.ErrAuditGap) {
		t.Fatalf("Read over deleted offsets = %v, want ErrAuditGap", err)
	}
	recs, err := f.Read(ctx, 0, 2, 4)
	if err != nil || len(recs) != 2 || recs[0].Offset != 2 {
		t.Fatalf("Read of held offsets = %v, %v", recs, err)
	}
}
