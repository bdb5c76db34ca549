package rules

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"
)

// stressIDs returns n user ids of every packed kind (raw, UUID, decimal).
func stressIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		switch i % 3 {
		case 0:
			ids[i] = fmt.Sprint("user-", i)
		case 1:
			ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		default:
			ids[i] = fmt.Sprint(1_000_000 + i)
		}
	}
	return ids
}

// TestPinTableIDsOutliveTable: the ids each hands out are the caller's
// own: they read the same after the table is unreachable and its memory
// unmapped (a slice into the mapping would fault or read other data).
func TestPinTableIDsOutliveTable(t *testing.T) {
	waitMapped(t, 0)
	ids := stressIDs(3000)
	b := newPinTableBuilder(0, 0)
	for _, id := range ids {
		if err := b.add([]byte(id), "EU"); err != nil {
			t.Fatal(err)
		}
	}
	var kept [][]byte
	b.finish().each(func(_ int, id []byte, _ string) { kept = append(kept, id) })
	waitMapped(t, 0) // the table is gone
	// Map again over what may be the same addresses, with other bytes.
	b2 := newPinTableBuilder(len(ids), 0)
	for i := range ids {
		if err := b2.add([]byte(fmt.Sprint("other-user-", i)), "US"); err != nil {
			t.Fatal(err)
		}
	}
	tab2 := b2.finish()
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	for _, id := range kept {
		if !want[string(id)] {
			t.Fatalf("an id from each reads %q after its table was unmapped", id)
		}
		delete(want, string(id))
	}
	if len(want) != 0 {
		t.Fatalf("%d ids missing", len(want))
	}
	runtime.KeepAlive(tab2)
}

// TestPinTableLookupsWhileCollected: tables reachable only from the
// lookup running on them, built and dropped while another goroutine
// collects without pause, answer correctly (a table unmapped under a
// lookup would fault).
func TestPinTableLookupsWhileCollected(t *testing.T) {
	ids := stressIDs(600)
	build := func() *pinTable {
		b := newPinTableBuilder(0, 0)
		for i, id := range ids {
			if err := b.add([]byte(id), []string{"US", "EU"}[i%2]); err != nil {
				t.Error(err)
			}
		}
		return b.finish()
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			runtime.GC()
		}
	})
	defer func() { stop.Store(true); wg.Wait() }()
	for round := range 12 {
		seen := 0
		build().each(func(_ int, id []byte, j string) {
			if seen++; seen%100 == 0 {
				runtime.GC()
			}
			_ = id[len(id)-1]
		})
		if seen != len(ids) {
			t.Fatalf("round %d: each saw %d pins, want %d", round, seen, len(ids))
		}
		lookUpAll(t, build(), ids)
	}
}

// lookUpAll looks every id up in tab, the only reference to it, with
// collections between.
func lookUpAll(t *testing.T, tab *pinTable, ids []string) {
	t.Helper()
	for i, id := range ids {
		if i%100 == 0 {
			runtime.GC()
		}
		if got, want := tab.Pin([]byte(id)), []string{"US", "EU"}[i%2]; got != want {
			t.Fatalf("Pin(%q) = %q, want %q", id, got, want)
		}
	}
}

// TestPinMemFreeLeavesNoStalePointer: a region given back leaves no
// pointer to it in the spare capacity of the region list, which the
// garbage collector still scans (a pointer into unmapped memory there is
// "a bad pointer in the Go heap" should the heap ever be mapped at that
// address).
func TestPinMemFreeLeavesNoStalePointer(t *testing.T) {
	if runtime.GOOS != "linux" {
		return
	}
	b := newPinTableBuilder(0, 0)
	for i := range 5000 {
		if err := b.add([]byte(fmt.Sprint("user-", i)), "EU"); err != nil {
			t.Fatal(err)
		}
	}
	rs := b.t.mem.regions
	for i, r := range rs[len(rs):cap(rs)] {
		if r != nil {
			t.Fatalf("region list slot %d past its length still points at %p, given back", len(rs)+i, unsafe.SliceData(r))
		}
	}
	runtime.KeepAlive(b)
}
