package rules

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// waitMapped collects until the memory mapped for pin tables is want
// bytes (cleanups run after a collection, on their own goroutine), and
// fails if it is not within 10 s.
func waitMapped(t *testing.T, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if got := pinMappedBytes.Load(); got == want {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("%d bytes mapped for pin tables, want %d: a table's memory was not given back", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkPins looks every user of want up in tab and fails at the first
// jurisdiction that is not want's.
func checkPins(t *testing.T, tab *pinTable, want map[string]string) {
	t.Helper()
	for id, j := range want {
		if got := tab.Pin([]byte(id)); got != j {
			t.Fatalf("Pin(%q) = %q, want %q", id, got, j)
		}
	}
}

// TestPinTableMemoryMapped: on Linux a table's slots, arena and filter are
// mapped outside the heap, counted while the table lives, and unmapped
// once it is unreachable; lookups read them correctly throughout (with
// collections between them).
func TestPinTableMemoryMapped(t *testing.T) {
	if runtime.GOOS != "linux" {
		if pinMappedBytes.Load() != 0 {
			t.Fatal("memory mapped outside Linux")
		}
		return // outside Linux the heap fallback is what every other test exercises
	}
	waitMapped(t, 0) // no table from an earlier test still mapped
	const n = 50_000
	b := newPinTableBuilder(n, 36*n)
	want := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i*7919)
		if err := b.add([]byte(id), []string{"US", "EU"}[i%2]); err != nil {
			t.Fatal(err)
		}
		want[id] = []string{"US", "EU"}[i%2]
	}
	tab := b.finish()
	mapped := pinMappedBytes.Load()
	if m := int64(tab.mem.mapped()); m != mapped || m < int64(8*len(tab.slots)+len(tab.arena)) {
		t.Fatalf("mapped %d bytes in all, %d for the table, want at least its slots and arena (%d)", mapped, m, 8*len(tab.slots)+len(tab.arena))
	}
	// The arena was reserved for 36-byte ids and got 17-byte ones: finish
	// gave back the pages left unused.
	if c := cap(tab.arena); c > len(tab.arena)+pageSize {
		t.Fatalf("arena capacity %d for %d bytes used: the reserve was not trimmed", c, len(tab.arena))
	}
	for i := 0; i < 3; i++ {
		runtime.GC()
		checkPins(t, tab, want)
	}
	if got := tab.Pin([]byte("00000000-0000-4000-8000-ffffffffffff")); got != "" {
		t.Fatalf("a user without a pin: %q", got)
	}
	runtime.KeepAlive(tab)
	tab = nil
	waitMapped(t, 0)
}

// TestPinTableBuilderGivesBackWhatItOutgrew: a builder that grows its
// index and arena from nothing unmaps each outgrown copy at once, and a
// builder dropped unfinished (a failed load) gives back everything.
func TestPinTableBuilderGivesBackWhatItOutgrew(t *testing.T) {
	if runtime.GOOS != "linux" {
		return
	}
	waitMapped(t, 0)
	b := newPinTableBuilder(0, 0)
	for i := range 20_000 {
		if err := b.add([]byte(fmt.Sprint("user-", i)), "EU"); err != nil {
			t.Fatal(err)
		}
		if len(b.t.mem.regions) != 2 {
			t.Fatalf("after %d pins: %d regions mapped, want 2 (the index and the arena)", i+1, len(b.t.mem.regions))
		}
	}
	if got, want := pinMappedBytes.Load(), int64(b.t.mem.mapped()); got != want {
		t.Fatalf("%d bytes mapped, the builder holds %d", got, want)
	}
	b = nil
	waitMapped(t, 0)
}

// FuzzPinTable compares the table with a Go map: any ids (raw, UUID-like,
// decimal), pins replaced, a table grown from nothing or sized up front.
func FuzzPinTable(f *testing.F) {
	f.Add([]byte("0f8fad5b-d9cb-469f-a165-70867728950e\x00123\x00abc\x00123"), false)
	f.Add([]byte("18446744073709551615\x0018446744073709551616\x000\x0001\x00"), true)
	f.Fuzz(func(t *testing.T, data []byte, sized bool) {
		ids := strings.Split(string(data), "\x00")
		n := 0
		if sized {
			n = len(ids)
		}
		b := newPinTableBuilder(n, len(data))
		want := map[string]string{}
		for i, id := range ids {
			j := []string{"US", "EU", "UK"}[i%3]
			if err := b.add([]byte(id), j); err != nil {
				t.Fatal(err)
			}
			want[id] = j
		}
		tab := b.finish()
		if tab.n != len(want) {
			t.Fatalf("%d pins, want %d", tab.n, len(want))
		}
		seen := 0
		tab.each(func(_ int, id []byte, j string) {
			seen++
			if want[string(id)] != j {
				t.Fatalf("each: %q → %q, want %q", id, j, want[string(id)])
			}
		})
		if seen != len(want) {
			t.Fatalf("each saw %d pins, want %d", seen, len(want))
		}
		for _, id := range ids {
			for _, q := range []string{id, id + "0", "0" + id, strings.ToUpper(id)} {
				if got := tab.Pin([]byte(q)); got != want[q] {
					t.Fatalf("Pin(%q) = %q, want %q", q, got, want[q])
				}
			}
		}
	})
}

// TestPinsResyncsUnderReaders: a Pins following a store through many full
// reads and announced changes (each burst large enough to compact into a
// new table, so tables are built and dropped all along) while readers
// hold views and look users up with collections forced between: every
// answer is one the store gave for that user, every table no longer in
// use is unmapped, and at the end the view answers as the store does.
// Run with -race too.
func TestPinsResyncsUnderReaders(t *testing.T) {
	waitMapped(t, 0)
	const users = 20_000
	f := newFakePinStore()
	jurs := []string{"US", "EU", "UK"}
	name := func(i int) string { return fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i) }
	for i := range users {
		f.set(name(i), jurs[i%3])
	}
	p := startPins(t, f, PinsOptions{ResyncInterval: 20 * time.Millisecond})
	f.events <- PinEvent{Kind: PinsSubscribed}
	select {
	case <-p.Loaded():
	case <-time.After(10 * time.Second):
		t.Fatal("not loaded")
	}

	var stop atomic.Bool
	var wg sync.WaitGroup
	var lookups atomic.Int64
	errs := make(chan error, 4)
	for r := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 9))
			for it := 0; !stop.Load(); it++ {
				v, err := p.Pins()
				if err != nil {
					continue
				}
				for range 2000 {
					i := rng.IntN(users + 100) // some users never pinned
					got := v.Pin([]byte(name(i)))
					if i >= users && got != "" || i < users && got != "" && got != "US" && got != "EU" && got != "UK" {
						errs <- fmt.Errorf("Pin(user %d) = %q", i, got)
						return
					}
					lookups.Add(1)
				}
				if it%4 == 0 {
					runtime.GC()
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(3, 4))
	began := time.Now()
	for round := range 6 {
		// A burst of announced changes above the compaction threshold
		// (4096): the next view is a new table.
		for k := range 5000 {
			i := rng.IntN(users)
			j := jurs[(i+round+k)%3]
			if k%10 == 0 {
				j = ""
			}
			f.set(name(i), j)
			f.events <- PinEvent{Kind: PinChanged, UserID: name(i)}
		}
		// And some changes no announcement brings: the resync finds them.
		f.mu.Lock()
		for k := range 50 {
			f.pins[name((round*50+k)%users)] = "UK"
		}
		f.mu.Unlock()
		time.Sleep(60 * time.Millisecond)
		runtime.GC()
	}
	t.Logf("changes applied in %s", time.Since(began))
	stop.Store(true)
	wg.Wait()
	t.Logf("readers stopped after %s, %d lookups", time.Since(began), lookups.Load())
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	if lookups.Load() == 0 {
		t.Fatal("no lookups ran")
	}
	f.mu.Lock()
	want := make(map[string]string, len(f.pins))
	for u, j := range f.pins {
		want[u] = j
	}
	f.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		bad := ""
		for i := range users {
			if got := pinOf(p, name(i)); got != want[name(i)] {
				bad = fmt.Sprintf("user %d: %q, want %q", i, got, want[name(i)])
				break
			}
		}
		if bad == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(bad)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if runtime.GOOS == "linux" {
		// Only the current table (and the one a resync may be comparing
		// with, the same) stays mapped: every one before was given back.
		s := p.snap.Load()
		deadline := time.Now().Add(10 * time.Second)
		for {
			runtime.GC()
			got, cur := pinMappedBytes.Load(), int64(s.base.mem.mapped())
			if got == cur {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d bytes mapped for pin tables, the view's table has %d: old tables not given back", got, cur)
			}
			s = p.snap.Load()
			time.Sleep(20 * time.Millisecond)
		}
		runtime.KeepAlive(s)
	}
}

// TestPinTableWhenMappingFails: when the system maps no memory (mapMem
// answers nil), a table is built in the Go heap instead, answers every
// lookup as a mapped one does, counts nothing as mapped, and a Pins over
// it reports no bytes outside the heap (so route lowers no memory limit
// for it).
func TestPinTableWhenMappingFails(t *testing.T) {
	waitMapped(t, 0)
	mapPages = func(int) []byte { return nil }
	t.Cleanup(func() { mapPages = mapMem })
	const n = 5_000
	b := newPinTableBuilder(0, 0) // grows its index and arena: every growth asks for memory again
	want := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("user-%d", i*31)
		if err := b.add([]byte(id), []string{"US", "EU", "IN"}[i%3]); err != nil {
			t.Fatal(err)
		}
		want[id] = []string{"US", "EU", "IN"}[i%3]
	}
	tab := b.finish()
	if got := pinMappedBytes.Load(); got != 0 || tab.mem.mapped() != 0 {
		t.Fatalf("%d bytes mapped (%d for the table) with every mapping failing", got, tab.mem.mapped())
	}
	runtime.GC()
	checkPins(t, tab, want)
	if got := tab.Pin([]byte("user-1")); got != "" {
		t.Fatalf("a user without a pin: %q", got)
	}
	store := newFakePinStore()
	for id, j := range want {
		store.set(id, j)
	}
	pins := NewPins(store, PinsOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pins.Run(ctx) }()
	select {
	case <-pins.Loaded():
	case <-time.After(10 * time.Second):
		t.Fatal("pins not loaded")
	}
	if pins.Len() != n || pins.Bytes() == 0 || pins.MappedBytes() != 0 {
		t.Fatalf("Len %d, Bytes %d, MappedBytes %d: want %d pins, all in the heap", pins.Len(), pins.Bytes(), pins.MappedBytes(), n)
	}
	cancel()
	<-done
}
