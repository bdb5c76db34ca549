// Package audittest holds the conformance suite every audit.Feed adapter
// (the Kafka one in production) must pass, so that the integrator's
// exactly-once guarantee holds over it.
package audittest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
)

// FeedUnderTest is a fresh, empty audit topic with Partitions partitions
// and a way to append to it.
type FeedUnderTest struct {
	// Feed is the adapter under test.
	Feed audit.Feed
	// Partitions is the number of partitions of its topic (at least 2).
	Partitions int32
	// Produce appends value to partition p and returns its offset.
	Produce func(t testing.TB, p int32, value []byte) int64
}

// TestFeed checks a Feed adapter: Fetch returns records from the cursor on
// (a partition the cursor lacks from its first offset), in offset order
// within each partition, at most max of them, and blocks until there is one
// or its context ends; Read returns exactly the records of an offset range,
// as often as asked. newFeed is called once per subtest.
func TestFeed(t *testing.T, newFeed func(t *testing.T) FeedUnderTest) {
	t.Run("FetchFromCursor", func(t *testing.T) {
		f := newFeed(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		want := map[int32][]int64{}
		for i := 0; i < 30; i++ {
			p := int32(i) % f.Partitions
			want[p] = append(want[p], f.Produce(t, p, value(p, i)))
		}
		cursor := audit.Cursor{}
		got := map[int32][]audit.AuditRecord{}
		for n := 0; n < 30; {
			recs, err := f.Feed.Fetch(ctx, cursor, 7)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if len(recs) == 0 || len(recs) > 7 {
				t.Fatalf("Fetch returned %d records, want 1 to 7", len(recs))
			}
			for _, r := range recs {
				if next, ok := cursor[r.Partition]; ok && r.Offset < next {
					t.Fatalf("record %d/%d is before the cursor %d", r.Partition, r.Offset, next)
				}
				got[r.Partition] = append(got[r.Partition], r)
				cursor[r.Partition] = r.Offset + 1
			}
			n += len(recs)
		}
		for p, offs := range want {
			if len(got[p]) != len(offs) {
				t.Fatalf("partition %d: %d records, want %d", p, len(got[p]), len(offs))
			}
			for i, r := range got[p] {
				if r.Offset != offs[i] {
					t.Fatalf("partition %d: record %d at offset %d, want %d (order)", p, i, r.Offset, offs[i])
				}
				if !bytes.Equal(r.Value, value(p, int(p)+i*int(f.Partitions))) {
					t.Fatalf("partition %d offset %d: wrong value", p, r.Offset)
				}
			}
		}
		// From a cursor in the middle, the records after it.
		mid := audit.Cursor{0: want[0][3]}
		recs, err := f.Feed.Fetch(ctx, mid, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Partition == 0 && r.Offset < want[0][3] {
				t.Fatalf("Fetch from offset %d returned offset %d", want[0][3], r.Offset)
			}
		}
	})
	t.Run("FetchBlocksUntilRecordOrCancel", func(t *testing.T) {
		f := newFeed(t)
		off := f.Produce(t, 0, []byte("a"))
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		cur := audit.Cursor{0: off + 1}
		for p := int32(1); p < f.Partitions; p++ {
			cur[p] = 0
		}
		start := time.Now()
		recs, err := f.Feed.Fetch(ctx, cur, 10)
		if len(recs) != 0 || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Fetch with nothing new = %d records, %v; want none and the context's error", len(recs), err)
		}
		if time.Since(start) < 250*time.Millisecond {
			t.Fatalf("Fetch returned after %v, before its context ended", time.Since(start))
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel2()
		go func() {
			time.Sleep(100 * time.Millisecond)
			f.Produce(t, 0, []byte("b"))
		}()
		recs, err = f.Feed.Fetch(ctx2, cur, 10)
		if err != nil || len(recs) != 1 || string(recs[0].Value) != "b" {
			t.Fatalf("Fetch after a produce = %v, %v", recs, err)
		}
	})
	t.Run("ReadExactRange", func(t *testing.T) {
		f := newFeed(t)
		var offs []int64
		for i := 0; i < 10; i++ {
			offs = append(offs, f.Produce(t, 1, value(1, i)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for round := 0; round < 2; round++ { // a redo reads the same range again
			recs, err := f.Feed.Read(ctx, 1, offs[2], offs[7])
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(recs) != 5 {
				t.Fatalf("Read [%d, %d) = %d records, want 5", offs[2], offs[7], len(recs))
			}
			for i, r := range recs {
				if r.Partition != 1 || r.Offset != offs[2+i] || !bytes.Equal(r.Value, value(1, 2+i)) {
					t.Fatalf("Read record %d = %d/%d", i, r.Partition, r.Offset)
				}
			}
		}
		if recs, err := f.Feed.Read(ctx, 1, offs[3], offs[3]); err != nil || len(recs) != 0 {
			t.Fatalf("empty Read = %d records, %v", len(recs), err)
		}
	})
}

func value(p int32, i int) []byte {
	return []byte(fmt.Sprintf("audit record %d of partition %d", i, p))
}
