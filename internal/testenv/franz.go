package testenv

import (
	"cmp"
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Franz returns a franz-go client of k, closed when the test ends: a Kafka
// client that is not the one the project is built on (kafka-go), for tests
// that produce as a producer written elsewhere would, and read records back
// as the broker holds them (a null key, value or header value apart from an
// empty one). opts are added to the seed brokers.
func (k *Kafka) Franz(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(k.Brokers...)}, opts...)...)
	if err != nil {
		t.Fatalf("testenv: franz-go client of cluster %s: %v", k.Name, err)
	}
	t.Cleanup(c.Close)
	return c
}

// ReadTopic returns every record of topic up to each partition's high-water
// mark when it is called, partition by partition in offset order, read with
// franz-go, without a consumer group.
func (k *Kafka) ReadTopic(t testing.TB, ctx context.Context, topic string) []*kgo.Record {
	t.Helper()
	end := k.endOffsets(t, ctx, topic)
	left := 0
	for _, e := range end {
		if e > 0 {
			left++
		}
	}
	if left == 0 {
		return nil
	}
	// A client that has not read a partition to its end in a minute is
	// stuck (a CI run once saw one wait five minutes for records a fresh
	// client read at once): read again with a new one.
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		recs, done := k.readTo(t, actx, topic, end)
		cancel()
		if done == left {
			return recs
		}
		if ctx.Err() != nil || attempt == 3 {
			t.Fatalf("testenv: read %s on cluster %s: %v (%d of %d partitions read)", topic, k.Name, cmp.Or(ctx.Err(), context.DeadlineExceeded), done, left)
		}
		t.Logf("testenv: read %s on cluster %s: %d of %d partitions read to their end in a minute; reading again with a new client", topic, k.Name, done, left)
	}
}

// readTo reads every partition of topic from its start to end (its
// high-water mark) with a new client, until ctx ends, and returns the
// records read and how many partitions it read to their end.
func (k *Kafka) readTo(t testing.TB, ctx context.Context, topic string, end map[int32]int64) ([]*kgo.Record, int) {
	t.Helper()
	start := map[int32]kgo.Offset{}
	for p, e := range end {
		if e > 0 {
			start[p] = kgo.NewOffset().AtStart()
		}
	}
	c := k.Franz(t, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))
	defer c.Close()
	byPart := map[int32][]*kgo.Record{}
	done := map[int32]bool{}
	for len(done) < len(start) {
		fs := c.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil, len(done)
		}
		fs.EachError(func(_ string, p int32, err error) {
			t.Fatalf("testenv: read %s/%d on cluster %s: %v", topic, p, k.Name, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[r.Partition] {
				byPart[r.Partition] = append(byPart[r.Partition], r)
			}
			if r.Offset >= end[r.Partition]-1 {
				done[r.Partition] = true
			}
		})
	}
	var out []*kgo.Record
	for p := range int32(len(end)) {
		out = append(out, byPart[p]...)
	}
	return out, len(done)
}

// endOffsets returns the high-water mark of every partition of topic.
func (k *Kafka) endOffsets(t testing.TB, ctx context.Context, topic string) map[int32]int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil {
		t.Fatalf("testenv: metadata of %s on cluster %s: %v", topic, k.Name, err)
	}
	var req []kafka.OffsetRequest
	for _, p := range md.Topics[0].Partitions {
		req = append(req, kafka.LastOffsetOf(p.ID))
	}
	lo, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: req}})
	if err != nil {
		t.Fatalf("testenv: end offsets of %s on cluster %s: %v", topic, k.Name, err)
	}
	out := map[int32]int64{}
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("testenv: end offset of %s/%d on cluster %s: %v", topic, p.Partition, k.Name, p.Error)
		}
		out[int32(p.Partition)] = p.LastOffset
	}
	return out
}
