package audit

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/benchtest"
)

// benchValue is the size of the bench mix's canonical events (~250 bytes).
var benchValue = bytes.Repeat([]byte("v"), 250)

// BenchmarkPerEvent is what the router adds per event with the audit on:
// the value and key digests (shared by the leaf and the tag), the leaf's
// wire encoding into the batch's audit record, and the attestation tag.
func BenchmarkPerEvent(b *testing.B) {
	a, _ := NewAttester(testKey("k1"))
	key := []byte("user-123456")
	leaf := Leaf{Kind: KindRoute, Time: 1764028800123, Actor: "router-a",
		Src:      Source{Topic: "events", Partition: 3, Offset: 42},
		Decision: Routed, DecidedBy: "country", Jurisdiction: "EU", Region: "eu",
		Ruleset: RulesetRef{Version: 7, Digest: Sum([]byte("r"))},
		Dest:    Destination{Cluster: "b", Topic: "residency.eu", Partition: 1, Offset: 9000}}
	in := AttestationInput{Decision: Routed, Jurisdiction: "EU", Region: "eu", RulesetVersion: 7,
		DestCluster: "b", DestTopic: "residency.eu", SrcTopic: "events", SrcPartition: 3}
	var rec WireRecord
	rec.Start(make([]byte, 0, 1<<20))
	entry := make([]byte, 0, 512)
	tag := make([]byte, 0, 128)
	b.ReportAllocs()
	b.SetBytes(int64(len(benchValue)))
	cpu := benchtest.CPUTime()
	for i := 0; b.Loop(); i++ {
		leaf.Src.Offset = int64(i)
		leaf.SetRecord(key, benchValue)
		in.Value, in.Key, in.SrcOffset = leaf.Value, leaf.Key, leaf.Src.Offset
		tag = a.AppendTag(tag[:0], &in)
		entry, _ = AppendWireEntry(entry[:0], &leaf)
		if !rec.Fits(entry, 1<<20) {
			rec.Start(rec.Bytes())
		}
		_ = rec.Add(entry)
	}
	b.ReportMetric(float64(benchtest.CPUTime()-cpu)/float64(b.N), "cpu-ns/op")
}

// BenchmarkPerEventFloor is the least any router could add per event
// and still meet issue 14's design, which asks for a leaf per decision
// and an attestation per record: the value's and key's SHA-256, the
// cheapest tag over them and the record's coordinates (HMAC-SHA256 of
// 76 bytes: two digests, a partition and an offset; the pads' states
// cached, so three SHA-256 blocks), and the leaf's wire entry added to
// its audit record. It leaves out what the router's audit does beyond
// that (the subject's keyed hash, the tag's context fields, the leaf's
// trip through the settled backlog, the audit record's produce, the
// attestation header's bytes on the destination records) and the
// broker's share. docs/performance.md turns it into a bound on the
// audit-on / audit-off throughput ratio on a host whose cores the
// router shares with the broker.
func BenchmarkPerEventFloor(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	key := []byte("user-123456")
	leaf := benchRouteLeaf()
	mac := hmac.New(sha256.New, bytes.Repeat([]byte("k"), 32))
	var in [76]byte
	sum := make([]byte, 0, sha256.Size)
	var rec WireRecord
	rec.Start(make([]byte, 0, 1<<20))
	entry := make([]byte, 0, 512)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		leaf.Src.Offset = int64(i)
		leaf.Value, leaf.Key = sha256.Sum256(benchValue), sha256.Sum256(key)
		copy(in[:32], leaf.Value[:])
		copy(in[32:64], leaf.Key[:])
		in[64], in[72] = byte(i), byte(i>>8)
		mac.Reset()
		mac.Write(in[:])
		sum = mac.Sum(sum[:0])
		entry, _ = AppendWireEntry(entry[:0], &leaf)
		if !rec.Fits(entry, 1<<20) {
			rec.Start(rec.Bytes())
		}
		_ = rec.Add(entry)
	}
}

// BenchmarkPerEventParts splits BenchmarkPerEvent.
func BenchmarkPerEventParts(b *testing.B) {
	a, _ := NewAttester(testKey("k1"))
	v, _ := NewAttestVerifier(testKey("k1"))
	in := sampleInput()
	leaf := vectorLeaves()[0].leaf
	b.Run("value-sha256", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			leaf.Value = Sum(benchValue)
		}
	})
	b.Run("key-sha256", func(b *testing.B) {
		key := []byte("user-123456")
		b.ReportAllocs()
		for b.Loop() {
			leaf.Key = Sum(key)
		}
	})
	b.Run("leaf-encode", func(b *testing.B) {
		buf := make([]byte, 0, 1024)
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = AppendLeaf(buf[:0], &leaf)
		}
	})
	b.Run("leaf-wire", func(b *testing.B) {
		entry := make([]byte, 0, 512)
		b.ReportAllocs()
		for b.Loop() {
			entry, _ = AppendWireEntry(entry[:0], &leaf)
		}
	})
	b.Run("leaf-record", func(b *testing.B) {
		entry, _ := AppendWireEntry(nil, &leaf)
		var rec WireRecord
		rec.Start(make([]byte, 0, 1<<20))
		b.ReportAllocs()
		for b.Loop() {
			if !rec.Fits(entry, 1<<20) {
				rec.Start(rec.Bytes())
			}
			_ = rec.Add(entry)
		}
	})
	b.Run("attest-sign", func(b *testing.B) {
		buf := make([]byte, 0, 128)
		b.ReportAllocs()
		for b.Loop() {
			buf = a.AppendTag(buf[:0], &in)
		}
	})
	b.Run("attest-verify", func(b *testing.B) {
		tag := a.AppendTag(nil, &in)
		b.ReportAllocs()
		for b.Loop() {
			if err := v.Verify(tag, &in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkIntegrateMem measures the integrator's own CPU, into memory:
// audit records of 500 leaves (one router batch each), 8 records (4000
// leaves) per integration batch and checkpoint. connectors/objectstore's
// BenchmarkIntegrate is the same into a file:// bucket.
func BenchmarkIntegrateMem(b *testing.B) {
	feed := newMemFeed(1)
	const perRecord = 500
	n := 0
	for n < b.N {
		ls := make([]Leaf, 0, perRecord)
		for i := 0; i < perRecord; i++ {
			ls = append(ls, routeLeaf(0, int64(n)))
			n++
		}
		feed.add(b, 0, ls...)
	}
	it, _ := NewIntegrator(IntegratorConfig{Store: &MemStore{}, Feed: feed, SignerKey: testLogKey, BatchRecords: 8})
	ctx := context.Background()
	b.ResetTimer()
	start, cpu := time.Now(), benchtest.CPUTime()
	for {
		k, err := it.Step(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if k == 0 {
			break
		}
	}
	b.ReportMetric(float64(it.Size())/time.Since(start).Seconds(), "leaves/s")
	b.ReportMetric(float64(it.Size())/(benchtest.CPUTime()-cpu).Seconds(), "leaves/cpu-s")
}

// The benchmarks below are the audit's per-event parts, named for
// `go test -bench 'Attest|Leaf|Subject|Wire'` (docs/performance.md, "The
// audit's cost per event"): before/after figures come from them.

// benchRouteLeaf is a route leaf as the router's ledger builds it.
func benchRouteLeaf() Leaf {
	l := Leaf{Kind: KindRoute, Time: 1764028800123, Actor: "router-a",
		Src:      Source{Topic: "events", Partition: 3, Offset: 4242424},
		Decision: Routed, DecidedBy: "country", Jurisdiction: "EU", Region: "eu",
		Ruleset: RulesetRef{Version: 7, Digest: Sum([]byte("r"))},
		Dest:    Destination{Cluster: "b", Topic: "residency.eu", Partition: 1, Offset: 9000000}}
	l.SetRecord([]byte("user-123456"), benchValue)
	l.Subject = Sum([]byte("subject"))
	return l
}

// BenchmarkAttestTag is one attestation tag (the HMAC over the input).
func BenchmarkAttestTag(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	a, _ := NewAttester(testKey("k1"))
	in := sampleInput()
	in.SrcOffset = 4242424
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = a.AppendTag(buf[:0], &in)
	}
}

// BenchmarkAttestVerify is a sink's check of one tag (digests given).
func BenchmarkAttestVerify(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	a, _ := NewAttester(testKey("k1"))
	v, _ := NewAttestVerifier(testKey("k0"), testKey("k1"))
	in := sampleInput()
	tag := a.AppendTag(nil, &in)
	b.ReportAllocs()
	for b.Loop() {
		if err := v.Verify(tag, &in); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAttestInputOf is the sink's reading of a record's attestation
// input from its headers, with the value and key digests.
func BenchmarkAttestInputOf(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	hs := []Header{{Key: "residency-jurisdiction", Value: []byte("EU")}, {Key: "residency-region", Value: []byte("eu")},
		{Key: "residency-ruleset-version", Value: []byte("7")}, {Key: "residency-source-topic", Value: []byte("events")},
		{Key: "residency-source-partition", Value: []byte("3")}, {Key: "residency-source-offset", Value: []byte("4242424")}}
	key := []byte("user-123456")
	b.ReportAllocs()
	b.SetBytes(int64(len(benchValue)))
	for b.Loop() {
		in := AttestationInputOf("b", "residency.eu", RolePinned, key, benchValue, hs)
		_ = in
	}
}

// BenchmarkLeafWire is one route leaf's wire encoding (AppendWireEntry)
// and its addition to a record (WireRecord.Add), per format: format 1
// (the leaf spelled out) is the reference.
func BenchmarkLeafWire(b *testing.B) {
	leaf := benchRouteLeaf()
	b.Run("format=2", func(b *testing.B) {
		defer benchtest.ReportCPU(b)()
		entry := make([]byte, 0, 512)
		var rec WireRecord
		rec.Start(make([]byte, 0, 1<<20))
		b.ReportAllocs()
		for b.Loop() {
			entry, _ = AppendWireEntry(entry[:0], &leaf)
			if !rec.Fits(entry, 1<<20) {
				rec.Start(rec.Bytes())
			}
			_ = rec.Add(entry)
		}
		b.ReportMetric(float64(rec.Len()-1)/float64(rec.Leaves()), "B/leaf")
	})
	b.Run("format=1", func(b *testing.B) {
		defer benchtest.ReportCPU(b)()
		rec := newV1Record(4096)
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			if len(rec) > cap(rec)-512 {
				rec, n = rec[:1], 0
			}
			rec, _ = appendV1Leaf(rec, &leaf)
			n++
		}
		b.ReportMetric(float64(len(rec)-1)/float64(n), "B/leaf")
	})
}

// BenchmarkLeafSetRecord is a leaf's value and key digests (a ~250-byte
// value).
func BenchmarkLeafSetRecord(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	var leaf Leaf
	key := []byte("user-123456")
	b.ReportAllocs()
	b.SetBytes(int64(len(benchValue)))
	for b.Loop() {
		leaf.SetRecord(key, benchValue)
	}
}

// BenchmarkWireDecode decodes an audit record of 500 route leaves (the
// integrator's side), per leaf.
func BenchmarkWireDecode(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	leaf := benchRouteLeaf()
	leaves := make([]Leaf, 500)
	for i := range leaves {
		leaves[i] = leaf
		leaves[i].Src.Offset += int64(i)
	}
	rec, err := EncodeWireRecord(leaves)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeWireRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/500, "ns/leaf")
}

// BenchmarkSubject is one user id's keyed hash.
func BenchmarkSubject(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	p, _ := NewPseudonymizer(bytes.Repeat([]byte("s"), 32))
	id := []byte("u-1234567")
	b.ReportAllocs()
	for b.Loop() {
		_ = p.Subject(id)
	}
}

// BenchmarkSubjectParallel is BenchmarkSubject from every core at once
// (the Pseudonymizer is shared by a sink's and a router's goroutines).
func BenchmarkSubjectParallel(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	p, _ := NewPseudonymizer(bytes.Repeat([]byte("s"), 32))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := []byte("u-1234567")
		for pb.Next() {
			_ = p.Subject(id)
		}
	})
}

// BenchmarkAttestVerifyRecord is a sink's whole check of one record: the
// value and key digests (a ~250-byte value) and the tag, read from its
// headers (what BenchmarkAttestInputOf and BenchmarkAttestVerify do
// together through AttestationInputOf).
func BenchmarkAttestVerifyRecord(b *testing.B) {
	defer benchtest.ReportCPU(b)()
	a, _ := NewAttester(testKey("k1"))
	v, _ := NewAttestVerifier(testKey("k0"), testKey("k1"))
	hs := []Header{{Key: "residency-jurisdiction", Value: []byte("EU")}, {Key: "residency-region", Value: []byte("eu")},
		{Key: "residency-ruleset-version", Value: []byte("7")}, {Key: "residency-source-topic", Value: []byte("events")},
		{Key: "residency-source-partition", Value: []byte("3")}, {Key: "residency-source-offset", Value: []byte("4242424")}}
	key := []byte("user-123456")
	in := AttestationInputOf("b", "residency.eu", RolePinned, key, benchValue, hs)
	hs = append(hs, Header{Key: HeaderAttestation, Value: a.AppendTag(nil, &in)})
	b.ReportAllocs()
	b.SetBytes(int64(len(benchValue)))
	for b.Loop() {
		if _, _, err := v.VerifyRecord("b", "residency.eu", RolePinned, key, benchValue, hs); err != nil {
			b.Fatal(err)
		}
	}
}
