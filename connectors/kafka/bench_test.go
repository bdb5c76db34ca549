package kafka_test

import (
	"context"
	"fmt"
	"github.com/residency-router/residency/internal/benchtest"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

// The pass-through benchmark (docs/performance.md, "Kafka client"):
//
//	RESIDENCY_BENCH_RECORDS=500000 go test ./connectors/kafka -run '^$' \
//	  -bench PassThrough -benchtime 1x -count 3
//
// with RESIDENCY_TEST_KAFKA_A set (the dev stack). Each iteration moves
// the same preloaded records (canonical ~250-byte events, 6 partitions)
// through two contenders, one after the other in alternating order, each
// with its own consumer group and destination topic:
//
//   - ours: Consumer.Poll (up to 1000 records) → Producer.Produce of the
//     same bytes (acks=all, idempotent) → Commit after the acks, in order;
//     up to 8 polls in flight, commits at most every 50ms and at the end.
//   - franz-go: kgo with the same shape (PollRecords of up to 1000 →
//     Produce, acks=all and idempotence, no compression like ours (kgo
//     compresses with snappy by default), kgo's defaults otherwise, e.g.
//     its 10ms linger → commit after the acks, in order, at most every
//     50ms and at the end).
//
// Throughput is from the first record polled to the last commit; CPU is
// getrusage of the process over the same span; allocations are the
// runtime's malloc count over it.

// quiet discards the clients' logs, which would interleave with the
// benchmark's output.
var quiet = slog.New(slog.DiscardHandler)

func benchRecords() int {
	if v, err := strconv.Atoi(os.Getenv("RESIDENCY_BENCH_RECORDS")); err == nil && v > 0 {
		return v
	}
	return 200_000
}

// preload writes n canonical user events (single-object Avro, about 250
// bytes, one producer header) to topic.
func preload(b *testing.B, k *testenv.Kafka, topic string, n int) {
	b.Helper()
	enc, err := sample.NewEncoder()
	if err != nil {
		b.Fatal(err)
	}
	countries := []string{"US", "DE", "FR", "IN", "BR", "GB"}
	var samples [][]byte
	for i := range 256 {
		v, err := enc.Encode(sample.Event{ID: fmt.Sprintf("evt-%08d-aaaa-bbbb-cccc", i), UserID: fmt.Sprintf("user-%d", i*7919),
			Country: countries[i%len(countries)]})
		if err != nil {
			b.Fatal(err)
		}
		samples = append(samples, v)
	}
	p, err := kafka.NewProducer(kafka.ProducerConfig{Cluster: kafka.Cluster{Name: "a", Brokers: k.Brokers}})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	var failed atomic.Value
	for i := 0; i < n; i += 5000 {
		var msgs []stream.Message
		for j := i; j < min(i+5000, n); j++ {
			msgs = append(msgs, stream.Message{Topic: topic, Key: fmt.Appendf(nil, "user-%d", j%10007), Value: samples[j%len(samples)],
				Headers: []stream.Header{{Key: "trace-id", Value: fmt.Appendf(nil, "%016x", j)}}})
		}
		wg.Add(1)
		if err := p.Produce(ctx, msgs, func(a kafka.Ack) {
			if a.Err != nil {
				failed.Store(a.Err)
			}
			wg.Done()
		}); err != nil {
			b.Fatal(err)
		}
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
}

// franzLinger is franz-go's producer linger: its default, 10ms, unless
// RESIDENCY_BENCH_FRANZ_LINGER says otherwise (e.g. 0s).
func franzLinger() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("RESIDENCY_BENCH_FRANZ_LINGER")); err == nil {
		return d
	}
	return 10 * time.Millisecond
}

// passResult is one contender's run.
type passResult struct {
	dur     time.Duration
	cpu     time.Duration
	mallocs uint64
}

func mallocs() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.Mallocs
}

// span measures from the first record to the end.
type span struct {
	once    sync.Once
	start   time.Time
	cpu0    time.Duration
	malloc0 uint64
}

func (s *span) begin() {
	s.once.Do(func() { s.start, s.cpu0, s.malloc0 = time.Now(), benchtest.CPUTime(), mallocs() })
}

func (s *span) end() passResult {
	return passResult{dur: time.Since(s.start), cpu: benchtest.CPUTime() - s.cpu0, mallocs: mallocs() - s.malloc0}
}

// passOurs moves n records from src to dst with the Consumer and the
// Producer.
func passOurs(b *testing.B, k *testenv.Kafka, src, dst string, n int) passResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	c, err := kafka.NewConsumer(kafka.ConsumerConfig{Cluster: cluster, GroupID: testenv.Name(b, "ours"), Topics: []string{src}, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close(context.Background())
	p, err := kafka.NewProducer(kafka.ProducerConfig{Cluster: cluster, Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	type batch struct {
		offsets []kafka.Offset
		done    chan error
	}
	pipe := make(chan *batch, 8)
	var sp span
	committed := make(chan error, 1)
	go func() {
		var pending []kafka.Offset
		last := time.Now()
		var err error
		for f := range pipe {
			if e := <-f.done; e != nil && err == nil {
				err = e
			}
			pending = mergeOffsets(pending, f.offsets)
			if time.Since(last) > 50*time.Millisecond {
				if e := c.Commit(ctx, pending...); e != nil && err == nil {
					err = e
				}
				last = time.Now()
			}
		}
		if e := c.Commit(ctx, pending...); e != nil && err == nil {
			err = e
		}
		committed <- err
	}()
	buf := make([]stream.Message, 0, 1000)
	for got := 0; got < n; {
		buf, err = c.Poll(ctx, buf[:0], 1000)
		if err != nil {
			b.Fatalf("poll: %v", err)
		}
		sp.begin()
		f := &batch{offsets: kafka.OffsetsAfter(buf...), done: make(chan error, 1)}
		for i := range buf {
			buf[i].Topic = dst
		}
		pipe <- f
		// Produce encodes the records before it returns: buf may be reused.
		if err := p.Produce(ctx, buf, func(a kafka.Ack) { f.done <- a.Err }); err != nil {
			b.Fatal(err)
		}
		got += len(buf)
	}
	close(pipe)
	if err := <-committed; err != nil {
		b.Fatal(err)
	}
	return sp.end()
}

// passFranz moves n records from src to dst with franz-go.
func passFranz(b *testing.B, k *testenv.Kafka, src, dst string, n int) passResult {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Brokers...), kgo.ConsumerGroup(testenv.Name(b, "franz")), kgo.ConsumeTopics(src),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.DefaultProduceTopic(dst),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.ProducerLinger(franzLinger()), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	type batch struct {
		offsets map[string]map[int32]kgo.EpochOffset
		left    atomic.Int64
		err     atomic.Value
		done    chan struct{}
	}
	pipe := make(chan *batch, 8)
	var sp span
	committed := make(chan error, 1)
	go func() {
		pending := map[string]map[int32]kgo.EpochOffset{}
		last := time.Now()
		var err error
		commit := func() {
			var cerr error
			cl.CommitOffsetsSync(ctx, pending, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, _ *kmsg.OffsetCommitResponse, e error) { cerr = e })
			if cerr != nil && err == nil {
				err = cerr
			}
		}
		for f := range pipe {
			<-f.done
			if e, _ := f.err.Load().(error); e != nil && err == nil {
				err = e
			}
			for t, ps := range f.offsets {
				if pending[t] == nil {
					pending[t] = map[int32]kgo.EpochOffset{}
				}
				for p, o := range ps {
					if o.Offset > pending[t][p].Offset {
						pending[t][p] = o
					}
				}
			}
			if time.Since(last) > 50*time.Millisecond {
				commit()
				last = time.Now()
			}
		}
		commit()
		committed <- err
	}()
	for got := 0; got < n; {
		fs := cl.PollRecords(ctx, 1000)
		if err := fs.Err0(); err != nil {
			b.Fatalf("poll: %v", err)
		}
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		sp.begin()
		f := &batch{offsets: map[string]map[int32]kgo.EpochOffset{}, done: make(chan struct{})}
		f.left.Store(int64(len(recs)))
		for _, r := range recs {
			ps := f.offsets[r.Topic]
			if ps == nil {
				ps = map[int32]kgo.EpochOffset{}
				f.offsets[r.Topic] = ps
			}
			if r.Offset+1 > ps[r.Partition].Offset {
				ps[r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
			}
		}
		pipe <- f
		for _, r := range recs {
			out := &kgo.Record{Topic: dst, Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}
			cl.Produce(ctx, out, func(_ *kgo.Record, err error) {
				if err != nil {
					f.err.CompareAndSwap(nil, err)
				}
				if f.left.Add(-1) == 0 {
					close(f.done)
				}
			})
		}
		got += len(recs)
	}
	close(pipe)
	if err := <-committed; err != nil {
		b.Fatal(err)
	}
	return sp.end()
}

// BenchmarkPassThrough compares a consume → produce pass-through built on
// the Consumer and the idempotent Producer with franz-go's, on the same
// broker, records and partitions, in the same run.
func BenchmarkPassThrough(b *testing.B) {
	k := testenv.KafkaA(b)
	n := benchRecords()
	src := k.Topic(b, "ptsrc", 6)
	preload(b, k, src, n)
	var ours, franz passResult
	b.ResetTimer()
	for i := range b.N {
		run := []func(){
			func() {
				r := passOurs(b, k, src, k.Topic(b, "ptours", 6), n)
				ours.dur += r.dur
				ours.cpu += r.cpu
				ours.mallocs += r.mallocs
			},
			func() {
				r := passFranz(b, k, src, k.Topic(b, "ptfranz", 6), n)
				franz.dur += r.dur
				franz.cpu += r.cpu
				franz.mallocs += r.mallocs
			},
		}
		if i%2 == 1 {
			run[0], run[1] = run[1], run[0]
		}
		run[0]()
		run[1]()
	}
	total := float64(n * b.N)
	b.ReportMetric(total/ours.dur.Seconds(), "ours_rec/s")
	b.ReportMetric(total/franz.dur.Seconds(), "franz_rec/s")
	b.ReportMetric(franz.dur.Seconds()/ours.dur.Seconds(), "ours/franz")
	b.ReportMetric(float64(ours.cpu.Microseconds())/total, "ours_cpu_µs/rec")
	b.ReportMetric(float64(franz.cpu.Microseconds())/total, "franz_cpu_µs/rec")
	b.ReportMetric(float64(ours.mallocs)/total, "ours_allocs/rec")
	b.ReportMetric(float64(franz.mallocs)/total, "franz_allocs/rec")
}

// BenchmarkConsume reads the preloaded records with the Consumer alone,
// into a reused slice, and reports the allocations per record of the
// whole consume path (fetch, decode, Poll), from the runtime's malloc
// count.
func BenchmarkConsume(b *testing.B) {
	k := testenv.KafkaA(b)
	n := benchRecords()
	src := k.Topic(b, "csrc", 6)
	preload(b, k, src, n)
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	var dur time.Duration
	var allocs uint64
	b.ResetTimer()
	for range b.N {
		c, err := kafka.NewConsumer(kafka.ConsumerConfig{Cluster: cluster, GroupID: testenv.Name(b, "c"), Topics: []string{src}, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		buf := make([]stream.Message, 0, 1000)
		var sp span
		for got := 0; got < n; {
			buf, err = c.Poll(context.Background(), buf[:0], 1000)
			if err != nil {
				b.Fatal(err)
			}
			sp.begin()
			got += len(buf)
		}
		r := sp.end()
		dur += r.dur
		allocs += r.mallocs
		_ = c.Close(context.Background())
	}
	total := float64(n * b.N)
	b.ReportMetric(total/dur.Seconds(), "rec/s")
	b.ReportMetric(float64(allocs)/total, "allocs/rec")
}
