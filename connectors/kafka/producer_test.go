package kafka_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

func newProducer(t *testing.T, cfg kafka.ProducerConfig) *kafka.Producer {
	t.Helper()
	p, err := kafka.NewProducer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// TestProducerFidelity: what the Producer writes, with every codec, reads
// back byte for byte, nil and empty kept apart, with our Consumer and with
// another client (franz-go).
func TestProducerFidelity(t *testing.T) {
	for _, k := range []*testenv.Kafka{testenv.KafkaA(t), testenv.KafkaB(t)} {
		t.Run("cluster_"+k.Name, func(t *testing.T) { testProducerFidelity(t, k) })
	}
}

func testProducerFidelity(t *testing.T, k *testenv.Kafka) {
	ctx := testenv.Context(t, 90*time.Second)
	cluster := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			topic := k.Topic(t, "pfid", 1)
			want := fidelityRecords(topic)
			p := newProducer(t, kafka.ProducerConfig{Cluster: cluster, Compression: codec})
			if err := p.Publish(ctx, want...); err != nil {
				t.Fatal(err)
			}
			c := newConsumer(t, kafka.ConsumerConfig{Cluster: cluster, GroupID: testenv.Name(t, "g"), Topics: []string{topic}})
			checkFidelity(t, pollN(t, ctx, c, len(want)), want)

			cl := kgoClient(t, k, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			var got []stream.Message
			for len(got) < len(want) {
				fs := cl.PollFetches(ctx)
				if err := fs.Err0(); err != nil {
					t.Fatal(err)
				}
				fs.EachRecord(func(r *kgo.Record) {
					m := stream.Message{Key: r.Key, Value: r.Value}
					for _, h := range r.Headers {
						m.Headers = append(m.Headers, stream.Header{Key: h.Key, Value: h.Value})
					}
					got = append(got, m)
				})
			}
			checkFidelity(t, got, want)
		})
	}
}

// TestProducerOrderAcrossOutages: same-key records flow through the
// idempotent producer, several calls in flight, while the connections to
// the broker are cut again and again (the test environment's outage
// proxy). Every record arrives exactly once and every key's records in
// the order produced: retries are resent in order, and what the broker
// had written already is recognised as a duplicate.
func TestProducerOrderAcrossOutages(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 120*time.Second)
	topic := k.Topic(t, "outage", 6)
	proxy := testenv.NewProxy(t, k.Brokers[0])
	cfg := kafka.ProducerConfig{Cluster: kafka.Cluster{Name: "a", Brokers: []string{proxy.Addr}, DialTimeout: time.Second},
		BatchSize: 20, RequestTimeout: 3 * time.Second}
	kafka.ProducerDialVia(&cfg, proxy.Addr)
	p := newProducer(t, cfg)

	const calls, perCall, keys, inFlight = 120, 50, 24, 8
	var sent []stream.Message
	for i := range calls * perCall {
		sent = append(sent, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "user-%d", i%keys),
			Value: fmt.Appendf(nil, "v-%d-%06d", i%keys, i)})
	}
	stop := make(chan struct{})
	cuts := 0
	var outages sync.WaitGroup
	outages.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(400 * time.Millisecond):
			}
			proxy.Cut()
			cuts++
			time.Sleep(300 * time.Millisecond)
			proxy.Restore()
		}
	})
	sem := make(chan struct{}, inFlight)
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for c := range calls {
		sem <- struct{}{}
		wg.Add(1)
		err := p.Produce(ctx, sent[c*perCall:(c+1)*perCall], func(a kafka.Ack) {
			if a.Err != nil {
				errs <- a.Err
			}
			<-sem
			wg.Done()
		})
		if err != nil {
			t.Fatalf("produce %d: %v", c, err)
		}
		time.Sleep(20 * time.Millisecond) // spread the calls over the outages
	}
	wg.Wait()
	close(stop)
	outages.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("ack: %v", err)
	}
	retries, bumps := kafka.ProducerStats(p)
	t.Logf("%d outages, %d batches resent, %d epoch bumps", cuts, retries, bumps)
	if cuts < 3 || retries == 0 {
		t.Fatalf("%d outages and %d resent batches: the test did not force retries", cuts, retries)
	}
	got := readTopic(t, ctx, k, topic, len(sent))
	checkOnceInOrder(t, sent, got)
}

// readTopic reads every record of topic with franz-go (directly, not
// through a proxy) until want arrived and nothing more comes for a moment.
func readTopic(t *testing.T, ctx context.Context, k *testenv.Kafka, topic string, want int) []*kgo.Record {
	t.Helper()
	cl := kgoClient(t, k, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond))
	var out []*kgo.Record
	var quietSince time.Time
	for {
		fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(fctx)
		cancel()
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records", len(out), want)
		}
		n := 0
		fs.EachRecord(func(r *kgo.Record) { out = append(out, r); n++ })
		if n > 0 || len(out) < want {
			quietSince = time.Time{}
			continue
		}
		if quietSince.IsZero() {
			quietSince = time.Now()
		} else if time.Since(quietSince) > time.Second {
			return out
		}
	}
}

// checkOnceInOrder: every record sent is in got once, each key in one
// partition, in the order sent.
func checkOnceInOrder(t *testing.T, sent []stream.Message, got []*kgo.Record) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range sent {
		pos[string(m.Value)] = i
	}
	seen := map[string]int{}
	last := map[string]int{}
	part := map[string]int32{}
	dups, disorder := 0, 0
	for _, r := range got {
		v := string(r.Value)
		i, ok := pos[v]
		if !ok {
			t.Fatalf("a record that was never sent: %q", v)
		}
		seen[v]++
		if seen[v] > 1 {
			dups++
			continue
		}
		k := string(r.Key)
		if p, ok := part[k]; ok && p != r.Partition {
			t.Errorf("key %s in partitions %d and %d", k, p, r.Partition)
		}
		part[k] = r.Partition
		if l, ok := last[k]; ok && i < l {
			disorder++
			if disorder <= 5 {
				t.Errorf("key %s: record %d after record %d", k, i, l)
			}
		}
		last[k] = i
	}
	if dups > 0 || disorder > 0 || len(seen) != len(sent) {
		t.Errorf("%d records written of %d sent, %d duplicates, %d out of order", len(seen), len(sent), dups, disorder)
	}
}

// TestProducerOrderOnANewTopic: right after a topic is created its
// partitions' leaders may refuse the first batches (NotLeaderOrFollower)
// while pipelined later ones are accepted; a broker that holds no state
// for a producer accepts any first sequence number, so the producer sends
// one batch at a time per partition until the leader has acknowledged
// one. Found by this test: records of the first call arrived after later
// ones.
func TestProducerOrderOnANewTopic(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	for round := range 3 {
		topic := k.Topic(t, fmt.Sprintf("fresh%d", round), 6)
		p := newProducer(t, kafka.ProducerConfig{Cluster: kafka.Cluster{Name: "a", Brokers: k.Brokers}, BatchSize: 20})
		const calls, perCall, keys = 40, 50, 24
		var sent []stream.Message
		for i := range calls * perCall {
			sent = append(sent, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "user-%d", i%keys),
				Value: fmt.Appendf(nil, "v-%d-%06d", i%keys, i)})
		}
		var wg sync.WaitGroup
		for c := range calls {
			wg.Add(1)
			if err := p.Produce(ctx, sent[c*perCall:(c+1)*perCall], func(a kafka.Ack) {
				if a.Err != nil {
					t.Error(a.Err)
				}
				wg.Done()
			}); err != nil {
				t.Fatal(err)
			}
		}
		wg.Wait()
		checkOnceInOrder(t, sent, readTopic(t, ctx, k, topic, len(sent)))
	}
}
