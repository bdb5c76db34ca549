package router_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

// BenchmarkRouterInMemory measures the pipeline itself (field extraction,
// decision, headers, publish and commit bookkeeping) over the in-memory
// broker, with real single-object Avro events and the real extractor.
func BenchmarkRouterInMemory(b *testing.B) { benchRouterInMemory(b, false) }

// BenchmarkRouterInMemoryAudit is BenchmarkRouterInMemory with the audit
// on: every record attested (auditwire.Attester), every decision leaf
// built (auditwire.Ledger, with subjects) and appended to a log that
// discards it, so what it measures is the router's own audit work.
func BenchmarkRouterInMemoryAudit(b *testing.B) { benchRouterInMemory(b, true) }

// discardLog is an auditwire.Log that keeps nothing.
type discardLog struct{}

func (discardLog) Append(context.Context, ...[]byte) error { return nil }

func benchRouterInMemory(b *testing.B, audited bool) {
	enc, err := sample.NewEncoder()
	if err != nil {
		b.Fatal(err)
	}
	fields, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		b.Fatal(err)
	}
	countries := []string{"US", "DE", "GB", "IN", "FR", "PR"}
	values := make([][]byte, 64)
	for i := range values {
		values[i], _ = enc.Encode(sample.Event{ID: fmt.Sprint(i), UserID: fmt.Sprint("user-", i), Country: countries[i%len(countries)]})
	}
	a, bb := streamtest.NewBroker(), streamtest.NewBroker()
	a.CreateTopic(ingest, 4)
	for _, tp := range []string{quarantine, deadLetter, "pinned.us", "pinned.in"} {
		a.CreateTopic(tp, 4)
	}
	bb.CreateTopic("pinned.eu", 4)
	bb.CreateTopic("pinned.uk", 4)
	msgs := make([]stream.Message, b.N)
	for i := range msgs {
		msgs[i] = stream.Message{Topic: ingest, Key: []byte(fmt.Sprint("user-", i%64)), Value: values[i%64], Time: time.Now()}
	}
	if err := a.Publisher().Publish(context.Background(), msgs...); err != nil {
		b.Fatal(err)
	}
	cfg := router.Config{
		Subscriber: a.Subscriber(group, ingest), Publishers: map[string]stream.Publisher{"a": a.Publisher(), "b": bb.Publisher()},
		IngestCluster: "a", QuarantineTopic: quarantine, DeadLetterTopic: deadLetter,
		Fields: fields, Rules: &rulesBox{rs: mustRules(b, 1)}, Instance: "bench",
		Logger: slog.New(slog.DiscardHandler), Metrics: router.NewMetrics(nil),
	}
	if audited {
		subjects, err := audit.NewPseudonymizer([]byte("bench-subject-key-bench-subject-key"))
		if err != nil {
			b.Fatal(err)
		}
		if cfg.Ledger, err = auditwire.NewLedger(discardLog{}, auditwire.LedgerConfig{Actor: "bench", Subjects: subjects}); err != nil {
			b.Fatal(err)
		}
		if cfg.Attester, err = auditwire.NewAttester(audit.AttestKey{ID: "bench", Secret: []byte("bench-attestation-key-bench-attestation")}); err != nil {
			b.Fatal(err)
		}
	}
	r, err := router.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	go func() { done <- r.Run(ctx) }()
	for {
		var n int64
		for p := range 4 {
			n += a.Committed(group, ingest, p)
		}
		if n == int64(b.N) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRouterKafka measures end-to-end routing over the test clusters
// (kfake, or real Kafka under make test): b.N events produced beforehand,
// routed to four regions on two clusters with acks from all replicas, and
// committed. Use a fixed count, e.g. -benchtime 20000x.
func BenchmarkRouterKafka(b *testing.B) {
	s := newStack(b)
	ctx := testenv.Context(b, 3*time.Minute)
	samples := s.goodEvents(b, "bench", b.N)
	for i := 0; i < len(samples); i += 5000 {
		s.produce(b, ctx, samples[i:min(i+5000, len(samples))])
	}
	r, _ := s.newRouter(b, "bench", func(c *router.Config) { c.BatchSize = 500 })
	b.ResetTimer()
	stop := runRouter(b, r)
	s.waitCommitted(b, ctx)
	b.StopTimer()
	if err := stop(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
