package kafka_test

import (
	"bytes"
	"fmt"
	"github.com/residency-router/residency/internal/benchtest"
	"testing"

	"github.com/segmentio/kafka-go/compress"

	"github.com/residency-router/residency/audit"
)

// benchAuditRecord returns an audit record of the router's route leaves as
// the bench writes them (a subject, value and key digests, five regions'
// pinned topics, six source partitions), of about size bytes.
func benchAuditRecord(b *testing.B, size int) []byte {
	b.Helper()
	regions := []struct{ j, r, topic, cluster string }{
		{"US", "us", "bench.us", "ingest"}, {"EU", "eu", "bench.eu", "ingest"}, {"UK", "uk", "bench.uk", "ingest"},
		{"IN", "in", "bench.in", "ingest"}, {"BR", "br", "bench.br", "ingest"},
	}
	rs := audit.RulesetRef{Version: 7, Digest: audit.Sum([]byte("ruleset"))}
	var rec audit.WireRecord
	rec.Start(make([]byte, 0, size))
	var entry []byte
	for i := 0; rec.Len() < size-audit.MaxLeafSize; i++ {
		g := regions[i%len(regions)]
		l := audit.Leaf{Kind: audit.KindRoute, Time: 1_764_000_000_000 + int64(i/100), Actor: "bench",
			Src:      audit.Source{Topic: "bench.ingest", Partition: int32(i % 6), Offset: int64(4_000_000 + i)},
			Value:    audit.Sum(fmt.Appendf(nil, "value-%d", i)),
			Key:      audit.Sum(fmt.Appendf(nil, "u-%07d", i)),
			Subject:  audit.Sum(fmt.Appendf(nil, "subject-%d", i)),
			Decision: audit.Routed, DecidedBy: "country", Jurisdiction: g.j, Region: g.r, Ruleset: rs,
			Dest: audit.Destination{Cluster: g.cluster, Topic: g.topic, Partition: int32(i % 6), Offset: int64(800_000 + i/5)}}
		var err error
		if entry, err = audit.AppendWireEntry(entry[:0], &l); err != nil {
			b.Fatal(err)
		}
		if err := rec.Add(entry); err != nil {
			b.Fatal(err)
		}
	}
	return rec.Bytes()
}

// BenchmarkAuditCodec compresses one 900 KiB audit record of route leaves
// with each codec the audit topic may use (AuditLogConfig.Compression), as
// the producer does (kafka-go's codecs): the CPU per record and per leaf's
// byte, and the compressed size against the record's (ratio). Only what
// the router spends: the broker's decompression is not in it.
func BenchmarkAuditCodec(b *testing.B) {
	rec := benchAuditRecord(b, 900<<10)
	for _, c := range []compress.Compression{compress.Lz4, compress.Snappy, compress.Zstd, compress.Gzip} {
		b.Run(c.String(), func(b *testing.B) {
			start := benchtest.CPUTime()
			var out bytes.Buffer
			b.SetBytes(int64(len(rec)))
			b.ReportAllocs()
			for b.Loop() {
				out.Reset()
				w := c.Codec().NewWriter(&out)
				if _, err := w.Write(rec); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(benchtest.CPUTime()-start)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(out.Len())/float64(len(rec)), "ratio")
		})
	}
}
