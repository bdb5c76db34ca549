package bench

import (
	"testing"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
)

func msgs(topic string, partOffsets ...[2]int) []stream.Message {
	out := make([]stream.Message, len(partOffsets))
	for i, po := range partOffsets {
		out[i] = stream.Message{Topic: topic, Partition: po[0], Offset: int64(po[1])}
	}
	return out
}

// The router's meter counts from each partition's first fetched offset,
// whatever order the partitions' runs come in, and counts every event once.
func TestPartMeterCountsCommittedEvents(t *testing.T) {
	p := &partMeter{base: map[partKey]int64{}}
	p.fetched(msgs("in", [2]int{0, 10}, [2]int{0, 11}, [2]int{1, 5}, [2]int{0, 12}, [2]int{1, 6}))
	p.fetched(msgs("other", [2]int{0, 100}))
	p.fetched(msgs("in", [2]int{0, 13}, [2]int{2, 0})) // later offsets do not move a base

	if n := p.committed([]router.Offset{{Topic: "in", Partition: 0, Next: 13}, {Topic: "in", Partition: 1, Next: 7}}); n != 3+2 {
		t.Fatalf("first commit counted %d events, want 5", n)
	}
	if n := p.committed([]router.Offset{{Topic: "in", Partition: 0, Next: 13}}); n != 0 {
		t.Fatalf("the same commit again counted %d events, want 0", n)
	}
	if n := p.committed([]router.Offset{{Topic: "in", Partition: 0, Next: 14}, {Topic: "other", Partition: 0, Next: 101}, {Topic: "in", Partition: 2, Next: 1}}); n != 3 {
		t.Fatalf("second commit counted %d events, want 3", n)
	}
	if n := p.committed([]router.Offset{{Topic: "in", Partition: 9, Next: 50}}); n != 0 {
		t.Fatalf("a partition never fetched counted %d events, want 0", n)
	}
}

// The meter sits in the router's fetch stage during the measured span; it
// must not cost an allocation per poll, let alone per event.
func TestPartMeterFetchedDoesNotAllocate(t *testing.T) {
	p := &partMeter{base: map[partKey]int64{}}
	batch := msgs("in", [2]int{0, 1}, [2]int{0, 2}, [2]int{3, 7}, [2]int{3, 8})
	p.fetched(batch)
	if n := testing.AllocsPerRun(100, func() { p.fetched(batch) }); n != 0 {
		t.Fatalf("fetched allocates %.0f times per poll", n)
	}
}
