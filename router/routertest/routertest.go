// Package routertest writes records as the router writes them, for the
// tests of what reads them (replay, sinks): each event decided and given
// its residency headers by the router's own pipeline (router.Pipeline), so
// no test forges the headers by hand. It is for tests only: no package the
// residency binary links imports it.
package routertest

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Records returns msgs as the router writes them under rs, in the order
// given: each decided by the pipeline (no pins; every cluster rs names is
// writable; events read in the single-object framing unless fields says
// otherwise) and published with its key, value, producer headers and
// timestamp and its residency headers (instance "router-0"), its Topic the
// topic the router writes it to: its region's pinned topic, or quarantine
// ("residency.quarantine") or dead-letter ("residency.dead-letter") on the
// cluster "ingest". Each message's Topic, Partition and Offset are its
// ingest coordinates. fields may be nil.
func Records(t testing.TB, rs *rules.Ruleset, fields router.FieldReader, msgs ...stream.Message) []stream.Message {
	t.Helper()
	if fields == nil {
		x, err := schemas.NewExtractor(schemas.ExtractorConfig{})
		if err != nil {
			t.Fatal(err)
		}
		fields = x
	}
	pubs := map[string]stream.Publisher{"ingest": &capture{}}
	for _, g := range rs.Regions {
		if _, ok := pubs[g.Cluster]; !ok {
			pubs[g.Cluster] = &capture{}
		}
	}
	p, err := router.NewPipeline(router.PipelineConfig{Publishers: pubs, IngestCluster: "ingest",
		QuarantineTopic: "residency.quarantine", DeadLetterTopic: "residency.dead-letter", Fields: fields,
		Instance: "router-0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in := slices.Clone(msgs)
	b, err := p.Decide(ctx, in, rs)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, b); err != nil {
		t.Fatal(err)
	}
	out := make([]stream.Message, 0, len(msgs))
	for i := range b.Events {
		cluster, _ := p.Destination(&b.Events[i].Decision)
		c := pubs[cluster].(*capture)
		out = append(out, c.msgs[0])
		c.msgs = c.msgs[1:]
	}
	return out
}

// capture is a publisher that keeps copies of what it is given.
type capture struct{ msgs []stream.Message }

func (c *capture) Publish(_ context.Context, msgs ...stream.Message) error {
	for _, m := range msgs {
		m.Key, m.Value = slices.Clone(m.Key), slices.Clone(m.Value)
		hs := make([]stream.Header, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = stream.Header{Key: h.Key, Value: slices.Clone(h.Value)}
		}
		m.Headers = hs
		c.msgs = append(c.msgs, m)
	}
	return nil
}

func (*capture) Close() error { return nil }
