package kafka_test

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/sample"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// Admin and RangeReader are the erasure package's Kafka ports as they are.
var (
	_ erasure.Admin       = (*kafka.Admin)(nil)
	_ erasure.TopicReader = (*kafka.RangeReader)(nil)
)

type rulesOf struct{ rs *rules.Ruleset }

func (r rulesOf) Current() (*rules.Ruleset, error) { return r.rs, nil }

// TestErasureOnRealKafka runs a purge held back by the sinks' progress, a
// residue scan and a listing of one user's events on both dev-stack
// clusters, through this package's Admin and RangeReader.
//
// Ingest topic (cluster a, 2 partitions): 10 events on partition 0,
// routed: US ones to residency.us (cluster a), DE ones to residency.eu
// (cluster b), with the router's headers; partition 1 holds 2 events the
// router never committed. The us sink stored everything, the eu sink its
// first 2 records. One US event sits misplaced in the EU pinned topic.
func TestErasureOnRealKafka(t *testing.T) {
	ka, kb := testenv.KafkaA(t), testenv.KafkaB(t)
	ctx := testenv.Context(t, 2*time.Minute)
	ingest := ka.Topic(t, "events", 2)
	usTopic := ka.Topic(t, "pinned_us", 1)
	euTopic := kb.Topic(t, "pinned_eu", 1)
	enc, err := sample.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	ref := schemas.WriterRef{Framing: schemas.FramingSingleObject, Fingerprint: enc.Fingerprint()}.String()
	fa := ka.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	fb := kb.Franz(t, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	routed := func(v []byte, off int64, region, jur string) []kgo.RecordHeader {
		return []kgo.RecordHeader{{Key: router.HeaderSourceTopic, Value: []byte(ingest)}, {Key: router.HeaderSourcePartition, Value: []byte("0")},
			{Key: router.HeaderSourceOffset, Value: []byte(strconv.FormatInt(off, 10))}, {Key: router.HeaderRegion, Value: []byte(region)},
			{Key: router.HeaderJurisdiction, Value: []byte(jur)}, {Key: router.HeaderSchema, Value: []byte(ref)}}
	}
	var euIngest []int64 // ingest offsets of the EU events, in pinned order
	for i := range 10 {
		country, user := "US", fmt.Sprintf("u%d", i%4)
		if i%2 == 1 {
			country = "DE"
		}
		v, err := enc.Encode(sample.Event{ID: fmt.Sprintf("e%d", i), UserID: user, Country: country})
		if err != nil {
			t.Fatal(err)
		}
		if err := fa.ProduceSync(ctx, &kgo.Record{Topic: ingest, Partition: 0, Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if country == "US" {
			err = fa.ProduceSync(ctx, &kgo.Record{Topic: usTopic, Partition: 0, Value: v, Headers: routed(v, int64(i), "us", "US")}).FirstErr()
		} else {
			euIngest = append(euIngest, int64(i))
			err = fb.ProduceSync(ctx, &kgo.Record{Topic: euTopic, Partition: 0, Value: v, Headers: routed(v, int64(i), "eu", "EU")}).FirstErr()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		v, _ := enc.Encode(sample.Event{ID: fmt.Sprintf("p1-%d", i), UserID: "u3", Country: "US"})
		if err := fa.ProduceSync(ctx, &kgo.Record{Topic: ingest, Partition: 1, Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	stray, _ := enc.Encode(sample.Event{ID: "stray", UserID: "u9", Country: "US"})
	if err := fb.ProduceSync(ctx, &kgo.Record{Topic: euTopic, Partition: 0, Value: stray, Headers: routed(stray, 99, "eu", "EU")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	group := testenv.Name(t, "router")
	commitOffset(t, ctx, ka, group, ingest, 0, 10)
	usGroup, euGroup := testenv.Name(t, "sink-us"), testenv.Name(t, "sink-eu")
	commitOffset(t, ctx, ka, usGroup, usTopic, 0, 5)
	commitOffset(t, ctx, kb, euGroup, euTopic, 0, 2)

	clusterOf := func(k *testenv.Kafka) erasure.Cluster {
		cl := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
		a, err := kafka.NewAdmin(cl)
		if err != nil {
			t.Fatal(err)
		}
		rr, err := kafka.NewRangeReader(cl)
		if err != nil {
			t.Fatal(err)
		}
		return erasure.Cluster{Admin: a, Reader: rr}
	}
	clusters := map[string]erasure.Cluster{ka.Name: clusterOf(ka), kb.Name: clusterOf(kb)}
	p, err := erasure.NewPurger(erasure.PurgeConfig{Clusters: clusters, IngestCluster: ka.Name, IngestTopics: []string{ingest}, RouterGroup: group,
		Downstream: []erasure.Downstream{
			{Topic: erasure.Topic{Cluster: ka.Name, Name: usTopic, Role: erasure.RolePinned}, Group: usGroup, Name: "us-postgres"},
			{Topic: erasure.Topic{Cluster: kb.Name, Name: euTopic, Role: erasure.RolePinned}, Group: euGroup, Name: "eu-objectstore"},
		}})
	if err != nil {
		t.Fatal(err)
	}
	plan, err := p.Run(ctx, erasure.PurgeOptions{AfterSinks: true})
	if err != nil {
		t.Fatal(err)
	}
	// The eu sink has not stored its third record: ingest offset euIngest[2].
	p0, p1 := plan.Partitions[0], plan.Partitions[1]
	if p0.Before != euIngest[2] || p0.HeldBy != erasure.HoldSinks || !p0.Deleted || p1.HeldBy != erasure.HoldNoCommit || p1.Records != 0 {
		t.Fatalf("plan %+v / %+v", p0, p1)
	}
	low, _, err := clusters[ka.Name].Admin.Watermarks(ctx, ingest)
	if err != nil || low[0] != euIngest[2] || low[1] != 0 {
		t.Fatalf("log starts after the purge: %v, %v; want %d and 0", low, err, euIngest[2])
	}

	// Residue of US: the US events left in the ingest topic (partition 0
	// from offset 5: 6 and 8; partition 1: both) and the stray in the EU
	// pinned topic.
	rs, err := rules.Parse(fmt.Appendf(nil, `
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [DE]}
regions:
  - {name: us, cluster: %s, topic: %s}
  - {name: eu, cluster: %s, topic: %s}
`, ka.Name, usTopic, kb.Name, euTopic))
	if err != nil {
		t.Fatal(err)
	}
	x, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := erasure.NewResidueScanner(erasure.ResidueConfig{Rules: rulesOf{rs}, Clusters: clusters,
		Topics: []erasure.Topic{{Cluster: ka.Name, Name: ingest, Role: erasure.RoleIngest}}, Events: erasure.NewEventReader(x)})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := sc.Scan(ctx, "US")
	if err != nil {
		t.Fatal(err)
	}
	got := ""
	for _, pl := range rep.Places {
		for _, pr := range pl.Partitions {
			got += fmt.Sprintf("%s/%d%v ", pl.Topic.Name, pr.Partition, pr.Ranges)
		}
	}
	want := fmt.Sprintf("%s/0[{6 7} {8 9}] %s/1[{0 2}] %s/0[{5 6}] ", ingest, ingest, euTopic)
	if got != want || rep.Verdict != erasure.VerdictResidue || rep.Residue != 5 {
		t.Fatalf("residue %q (%s, %d), want %q", got, rep.Verdict, rep.Residue, want)
	}

	// Where u3's events still are: ingest 7 (DE, partition 0; ingest 3 was
	// purged) and both of partition 1; eu pinned 1 and 3 (ingest 3 and 7:
	// a purge of the ingest topic leaves the pinned topics alone).
	l, err := erasure.NewLocator(erasure.LocateConfig{Clusters: clusters, Events: erasure.NewEventReader(x), Topics: []erasure.Topic{
		{Cluster: ka.Name, Name: ingest, Role: erasure.RoleIngest}, {Cluster: ka.Name, Name: usTopic, Role: erasure.RolePinned},
		{Cluster: kb.Name, Name: euTopic, Role: erasure.RolePinned}}})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := l.Locate(ctx, "u3")
	if err != nil {
		t.Fatal(err)
	}
	got = ""
	for _, h := range hs {
		for _, ph := range h.Partitions {
			got += fmt.Sprintf("%s/%d%v ", h.Name, ph.Partition, ph.Ranges)
		}
		if h.Records > 0 && (h.Retention == nil || h.Retention.Never || h.Retention.NotBefore.IsZero()) {
			t.Errorf("%s: retention %+v", h.Name, h.Retention)
		}
	}
	want = fmt.Sprintf("%s/0[{7 8}] %s/1[{0 2}] %s/0[{1 2} {3 4}] ", ingest, ingest, euTopic)
	if got != want {
		t.Fatalf("u3 is at %q, want %q", got, want)
	}
}
