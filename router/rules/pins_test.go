package rules

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/stream"
)

func TestPinTableExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	jurs := []string{"US", "EU", "UK", "IN", "BR"}
	want := map[string]string{}
	b := newPinTableBuilder(0, 0) // grows from nothing
	for i := range 100_000 {
		id := fmt.Sprintf("user-%d-%x", i, rng.Uint64())
		if i%7 == 0 {
			id = strings.Repeat("x", i%300) + id // long ids too (a two-byte length)
		}
		j := jurs[rng.IntN(len(jurs))]
		if err := b.add([]byte(id), j); err != nil {
			t.Fatal(err)
		}
		want[id] = j
	}
	// Replaced pins keep one entry.
	for id := range want {
		if err := b.add([]byte(id), "UK"); err != nil {
			t.Fatal(err)
		}
		want[id] = "UK"
		break
	}
	tab := b.finish()
	if tab.n != len(want) {
		t.Fatalf("%d pins, want %d", tab.n, len(want))
	}
	for id, j := range want {
		if got := tab.Pin([]byte(id)); got != j {
			t.Fatalf("Pin(%q) = %q, want %q", id, got, j)
		}
	}
	// Ids that are not pinned, also prefixes and extensions of pinned ones.
	for id := range want {
		for _, other := range []string{id + "x", id[:len(id)-1], "x" + id, ""} {
			if _, ok := want[other]; !ok && tab.Pin([]byte(other)) != "" {
				t.Fatalf("Pin(%q) = %q for a user without a pin", other, tab.Pin([]byte(other)))
			}
		}
	}
	if got := emptyPins.Pin([]byte("anyone")); got != "" {
		t.Fatalf("empty table: %q", got)
	}
}

func TestPinTableTooManyJurisdictions(t *testing.T) {
	b := newPinTableBuilder(0, 0)
	for i := range maxJurisdicts {
		if err := b.add([]byte(fmt.Sprint("u", i)), fmt.Sprint("J", i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.add([]byte("one-more"), "J-extra"); err == nil || !strings.Contains(err.Error(), "more than 256 distinct jurisdictions") {
		t.Fatalf("add = %v, want an error", err)
	}
}

func TestPinViewDoesNotAllocate(t *testing.T) {
	b := newPinTableBuilder(1000, 0)
	for i := range 1000 {
		_ = b.add([]byte(fmt.Sprint("user-", i)), "EU")
	}
	s := (&pinSnapshot{base: b.finish(), n: 1000}).with(map[string]string{"user-1": "", "user-new": "US"})
	ids := [][]byte{[]byte("user-1"), []byte("user-2"), []byte("user-new"), []byte("nobody")}
	var v PinView = s
	allocs := testing.AllocsPerRun(1000, func() {
		for _, id := range ids {
			_ = v.Pin(id)
		}
	})
	if allocs != 0 {
		t.Fatalf("Pin allocates %v times", allocs)
	}
	if got := []string{v.Pin(ids[0]), v.Pin(ids[1]), v.Pin(ids[2]), v.Pin(ids[3])}; !slices.Equal(got, []string{"", "EU", "US", ""}) {
		t.Fatalf("pins %q", got)
	}
	if s.n != 1000 {
		t.Fatalf("n = %d, want 1000 (one removed, one added)", s.n)
	}
	c, err := s.compact()
	if err != nil {
		t.Fatal(err)
	}
	if c.n != 1000 || c.base.n != 1000 || len(c.over) != 0 || c.Pin(ids[0]) != "" || c.Pin(ids[2]) != "US" || c.Pin(ids[1]) != "EU" {
		t.Fatalf("compacted: n %d, table %d, over %d", c.n, c.base.n, len(c.over))
	}
}

// fakePinStore is a PinStore in memory whose watch the test drives.
type fakePinStore struct {
	mu     sync.Mutex
	pins   map[string]string
	down   bool // every call fails
	scans  int
	paused chan struct{} // when not nil, ScanPins waits on it before every page but the first
	events chan PinEvent
}

func newFakePinStore() *fakePinStore {
	return &fakePinStore{pins: map[string]string{}, events: make(chan PinEvent, 100)}
}

var errDown = fmt.Errorf("fake: %w: connection refused", ErrUnavailable)

func (f *fakePinStore) set(user, j string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if j == "" {
		delete(f.pins, user)
	} else {
		f.pins[user] = j
	}
}

func (f *fakePinStore) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakePinStore) CountPins(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return 0, errDown
	}
	return len(f.pins), nil
}

func (f *fakePinStore) ScanPins(ctx context.Context, cursor uint64, count int) ([]Pin, uint64, error) {
	if cursor > 0 && f.paused != nil {
		select {
		case <-f.paused:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, 0, errDown
	}
	if cursor == 0 {
		f.scans++
	}
	var keys []string
	for k := range f.pins {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var page []Pin
	i := int(cursor)
	for ; i < len(keys) && len(page) < count; i++ {
		page = append(page, Pin{UserID: keys[i], Jurisdiction: f.pins[keys[i]]})
	}
	if i >= len(keys) {
		return page, 0, nil
	}
	return page, uint64(i), nil
}

func (f *fakePinStore) LookupPins(_ context.Context, ids [][]byte) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errDown
	}
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = f.pins[string(id)]
	}
	return out, nil
}

func (f *fakePinStore) WatchPins(context.Context) <-chan PinEvent { return f.events }

func (f *fakePinStore) scanCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.scans
}

func pinOf(p *Pins, user string) string {
	v, err := p.Pins()
	if err != nil {
		return "error: " + err.Error()
	}
	return v.Pin([]byte(user))
}

func startPins(t *testing.T, f *fakePinStore, opts PinsOptions) *Pins {
	t.Helper()
	p := NewPins(f, opts)
	runInBackground(t, "Pins.Run", p.Run)
	return p
}

func TestPinsFollowTheStore(t *testing.T) {
	f := newFakePinStore()
	for i := range 50 {
		f.set(fmt.Sprint("u", i), "EU")
	}
	p := NewPins(f, PinsOptions{PageSize: 7})
	if _, err := p.Pins(); !errors.Is(err, ErrNoPins) {
		t.Fatalf("Pins before Run = %v, want ErrNoPins", err)
	}
	runInBackground(t, "Pins.Run", p.Run)
	f.events <- PinEvent{Kind: PinsSubscribed}
	select {
	case <-p.Loaded():
	case <-time.After(5 * time.Second):
		t.Fatal("not loaded")
	}
	if p.Len() != 50 || pinOf(p, "u3") != "EU" || pinOf(p, "nobody") != "" {
		t.Fatalf("%d pins, u3 %q", p.Len(), pinOf(p, "u3"))
	}
	// An announced change is in force at once, without a full read.
	scans := f.scanCount()
	f.set("u3", "US")
	f.set("new", "UK")
	f.set("u4", "")
	f.events <- PinEvent{Kind: PinChanged, UserID: "u3"}
	f.events <- PinEvent{Kind: PinChanged, UserID: "new"}
	f.events <- PinEvent{Kind: PinChanged, UserID: "u4"}
	testenv.Eventually(t, 5*time.Second, "the changes", func() bool {
		return pinOf(p, "u3") == "US" && pinOf(p, "new") == "UK" && pinOf(p, "u4") == ""
	})
	if f.scanCount() != scans || p.Len() != 50 {
		t.Fatalf("%d full reads for announced changes, %d pins", f.scanCount()-scans, p.Len())
	}
	// A change nobody announced is found by the next full read (after a
	// re-subscription here), removals included.
	f.set("u5", "IN")
	f.set("u6", "")
	f.set("quiet", "BR")
	f.events <- PinEvent{Kind: PinsSubscribed}
	testenv.Eventually(t, 5*time.Second, "the unannounced changes", func() bool {
		return pinOf(p, "u5") == "IN" && pinOf(p, "u6") == "" && pinOf(p, "quiet") == "BR"
	})
	if p.Len() != 50 {
		t.Fatalf("%d pins, want 50", p.Len())
	}
}

// TestPinsLostNotificationRepairedByResync: a change whose announcement was
// lost is in force after the periodic full read.
func TestPinsLostNotificationRepairedByResync(t *testing.T) {
	f := newFakePinStore()
	f.set("u1", "EU")
	p := startPins(t, f, PinsOptions{ResyncInterval: 100 * time.Millisecond})
	f.events <- PinEvent{Kind: PinsSubscribed}
	testenv.Eventually(t, 5*time.Second, "loaded", func() bool { return pinOf(p, "u1") == "EU" })
	f.set("u1", "US") // announced to nobody
	f.set("u2", "UK")
	testenv.Eventually(t, 5*time.Second, "the resync", func() bool { return pinOf(p, "u1") == "US" && pinOf(p, "u2") == "UK" })
}

// TestPinsChangedDuringAFullRead: a change announced while a full read is
// between pages is in force at once and is not undone by the older answer
// of the read.
func TestPinsChangedDuringAFullRead(t *testing.T) {
	f := newFakePinStore()
	for i := range 20 {
		f.set(fmt.Sprintf("u%02d", i), "EU")
	}
	p := startPins(t, f, PinsOptions{PageSize: 5})
	f.events <- PinEvent{Kind: PinsSubscribed}
	testenv.Eventually(t, 5*time.Second, "loaded", func() bool { return p.Len() == 20 })

	f.paused = make(chan struct{})
	f.set("u02", "US")                         // its announcement is late: the read's first page sees US
	f.events <- PinEvent{Kind: PinsSubscribed} // a full read starts; its first page is u00..u04
	time.Sleep(50 * time.Millisecond)
	f.set("u01", "US") // after the read of its page
	f.set("u02", "UK") // changed again after the read of its page
	f.set("u15", "")   // before the read of its page
	for _, u := range []string{"u01", "u02", "u02", "u15"} {
		f.events <- PinEvent{Kind: PinChanged, UserID: u}
	}
	f.paused <- struct{}{} // page 2 read; the changes are applied between pages
	testenv.Eventually(t, 5*time.Second, "the changes during the read", func() bool {
		return pinOf(p, "u01") == "US" && pinOf(p, "u02") == "UK" && pinOf(p, "u15") == ""
	})
	close(f.paused)
	time.Sleep(100 * time.Millisecond)
	if pinOf(p, "u01") != "US" || pinOf(p, "u02") != "UK" || pinOf(p, "u15") != "" || p.Len() != 19 {
		t.Fatalf("after the read: u01 %q, u02 %q, u15 %q, %d pins", pinOf(p, "u01"), pinOf(p, "u02"), pinOf(p, "u15"), p.Len())
	}
}

// TestPinsStaleness: probes of a live subscription keep the view
// confirmed; without them (the store out of reach, the subscription
// broken), the view is refused after the staleness bound with ErrPinsStale
// saying since when and why, logged once; it recovers by itself.
func TestPinsStaleness(t *testing.T) {
	const bound = 300 * time.Millisecond
	f := newFakePinStore()
	f.set("u1", "EU")
	var logs testenv.SyncBuffer
	p := startPins(t, f, PinsOptions{StalenessBound: bound, Retry: streamRetry(20 * time.Millisecond),
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	f.events <- PinEvent{Kind: PinsSubscribed}
	testenv.Eventually(t, 5*time.Second, "loaded", func() bool { return pinOf(p, "u1") == "EU" })

	// Live probes confirm it past the bound.
	for range 10 {
		f.events <- PinEvent{Kind: PinsAlive, At: time.Now()}
		time.Sleep(bound / 5)
	}
	if _, err := p.Pins(); err != nil {
		t.Fatalf("with live probes: %v", err)
	}

	// Redis goes away: no probes, the re-subscription's full read fails.
	// The outage's log lines are counted from here: on a loaded host the
	// probe loop above may itself have been held past the bound (the view
	// then rightly went stale and was confirmed again by the next probe).
	mark := len(logs.String())
	outageLogs := func() string { return logs.String()[mark:] }
	f.setDown(true)
	down := time.Now()
	f.events <- PinEvent{Kind: PinsSubscribed}
	var err error
	staleAt := testenv.Eventually(t, 5*time.Second, "stale", func() bool {
		_, err = p.Pins()
		return err != nil
	})
	if !errors.Is(err, ErrPinsStale) || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "pins are stale since ") {
		t.Fatalf("Pins = %v, want ErrPinsStale wrapping ErrUnavailable", err)
	}
	if d := staleAt.Sub(down); d > bound+200*time.Millisecond {
		t.Fatalf("stale %s after Redis went away, bound %s", d, bound)
	}
	if _, lerr := p.Lookup(context.Background(), [][]byte{[]byte("u1")}); !errors.Is(lerr, ErrPinsStale) {
		t.Fatalf("Lookup = %v, want ErrPinsStale", lerr)
	}
	// Probes of a subscription re-established after a failed read confirm
	// nothing.
	f.events <- PinEvent{Kind: PinsAlive, At: time.Now()}
	time.Sleep(50 * time.Millisecond)
	if _, err := p.Pins(); !errors.Is(err, ErrPinsStale) {
		t.Fatalf("a probe after a failed read made the view usable: %v", err)
	}
	time.Sleep(3 * bound)
	for _, want := range []string{"reading the pin set failed", "the pin set is stale; routing must stop"} {
		if n := strings.Count(outageLogs(), want); n != 1 {
			t.Fatalf("%q logged %d times during the outage, want once:\n%s", want, n, logs.String())
		}
	}

	// Back: the retried full read confirms it again.
	f.set("u1", "US")
	f.setDown(false)
	testenv.Eventually(t, 5*time.Second, "recovered", func() bool { return pinOf(p, "u1") == "US" })
	if !strings.Contains(outageLogs(), "pins: confirmed again") {
		t.Fatalf("no recovery logged:\n%s", logs.String())
	}
}

// TestPinsStartWithStoreDown: nothing loaded is ErrNoPins with the reason,
// until the store answers.
func TestPinsStartWithStoreDown(t *testing.T) {
	f := newFakePinStore()
	f.set("u1", "EU")
	f.setDown(true)
	p := startPins(t, f, PinsOptions{Retry: streamRetry(10 * time.Millisecond)})
	f.events <- PinEvent{Kind: PinsSubscribed}
	testenv.Eventually(t, 5*time.Second, "a failed first read", func() bool {
		_, err := p.Pins()
		return errors.Is(err, ErrNoPins) && errors.Is(err, ErrUnavailable)
	})
	f.setDown(false)
	testenv.Eventually(t, 5*time.Second, "loaded", func() bool { return pinOf(p, "u1") == "EU" })
}

// TestPinsReadWhileUpdated: views handed out stay valid and consistent
// while changes arrive (run with -race).
func TestPinsReadWhileUpdated(t *testing.T) {
	f := newFakePinStore()
	for i := range 1000 {
		f.set(fmt.Sprint("u", i), "EU")
	}
	p := startPins(t, f, PinsOptions{})
	f.events <- PinEvent{Kind: PinsSubscribed}
	testenv.Eventually(t, 5*time.Second, "loaded", func() bool { return p.Len() == 1000 })
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			id := []byte("u0")
			for ctx.Err() == nil {
				v, err := p.Pins()
				if err != nil {
					t.Error(err)
					return
				}
				a := v.Pin(id)
				if b := v.Pin(id); a != b {
					t.Errorf("one view answered %q then %q", a, b)
					return
				}
			}
		})
	}
	for i := range 6000 { // past the compaction threshold
		j := []string{"US", "UK", ""}[i%3]
		f.set(fmt.Sprint("u", i%1000), j)
		f.events <- PinEvent{Kind: PinChanged, UserID: fmt.Sprint("u", i%1000)}
	}
	f.set("u0", "IN")
	f.events <- PinEvent{Kind: PinChanged, UserID: "u0"}
	testenv.Eventually(t, 5*time.Second, "the last change", func() bool { return pinOf(p, "u0") == "IN" })
	cancel()
	wg.Wait()
	want := 0
	f.mu.Lock()
	want = len(f.pins)
	f.mu.Unlock()
	if p.Len() != want {
		t.Fatalf("%d pins in memory, %d in the store", p.Len(), want)
	}
}

func streamRetry(d time.Duration) stream.Retry { return stream.Retry{Min: d, Max: 2 * d} }

// TestPackedIDs: ids in a canonical form are stored packed and come back
// exactly; near misses stay raw; a raw id equal to another's packed bytes
// is another user.
func TestPackedIDs(t *testing.T) {
	for _, c := range []struct {
		id   string
		kind byte
		size int
	}{
		{"0f8fad5b-d9cb-469f-a165-70867728950e", idUUID, 16},
		{"0F8FAD5B-D9CB-469F-A165-70867728950E", idRaw, 36}, // upper case: not canonical
		{"0f8fad5b-d9cb-469f-a165-70867728950g", idRaw, 36},
		{"0f8fad5bd9cb-469f-a165-70867728950e-", idRaw, 36},
		{"0", idDecimal, 1},
		{"1234567890123", idDecimal, 6},
		{"18446744073709551615", idDecimal, 10},
		{"18446744073709551616", idRaw, 20}, // 2^64
		{"007", idRaw, 3},
		{"-7", idRaw, 2},
		{"user-7", idRaw, 6},
		{"", idRaw, 0},
	} {
		var buf packBuf
		kind, b := packID([]byte(c.id), &buf)
		if kind != c.kind || len(b) != c.size || string(unpackID(kind, b)) != c.id {
			t.Errorf("%q: kind %d, %d bytes, back %q; want kind %d, %d bytes", c.id, kind, len(b), unpackID(kind, b), c.kind, c.size)
		}
	}
	var buf packBuf
	_, packed := packID([]byte("0f8fad5b-d9cb-469f-a165-70867728950e"), &buf)
	b := newPinTableBuilder(0, 0)
	for id, j := range map[string]string{"0f8fad5b-d9cb-469f-a165-70867728950e": "EU", string(packed): "US", "42": "UK", "\x2a": "IN"} {
		if err := b.add([]byte(id), j); err != nil {
			t.Fatal(err)
		}
	}
	tab := b.finish()
	for id, j := range map[string]string{"0f8fad5b-d9cb-469f-a165-70867728950e": "EU", string(packed): "US", "42": "UK", "\x2a": "IN",
		"0F8FAD5B-D9CB-469F-A165-70867728950E": "", "042": ""} {
		if got := tab.Pin([]byte(id)); got != j {
			t.Errorf("Pin(%q) = %q, want %q", id, got, j)
		}
	}
	var ids []string
	tab.each(func(_ int, id []byte, _ string) { ids = append(ids, string(id)) })
	slices.Sort(ids)
	if want := []string{"\x2a", "0f8fad5b-d9cb-469f-a165-70867728950e", "42", string(packed)}; !slices.Equal(ids, want) {
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Errorf("each: %q, want %q", ids, want)
		}
	}
}

// TestPinTableFilter: the table's filter never hides a pin (every pinned
// id of every kind is found), answers most ids without a pin itself (few
// false positives), and a table without pins says no to everything.
func TestPinTableFilter(t *testing.T) {
	b := newPinTableBuilder(0, 0)
	var pinned [][]byte
	for i := range 20000 {
		var id []byte
		switch i % 3 {
		case 0:
			id = fmt.Appendf(nil, "%08x-%04x-4%03x-a%03x-%012x", i, i%65536, i%4096, i%4096, i)
		case 1:
			id = fmt.Appendf(nil, "%d", 1000000+i)
		default:
			id = fmt.Appendf(nil, "user-%d", i)
		}
		if err := b.add(id, []string{"US", "EU"}[i%2]); err != nil {
			t.Fatal(err)
		}
		pinned = append(pinned, id)
	}
	tb := b.finish()
	if len(tb.filter) == 0 {
		t.Fatal("no filter after finish")
	}
	for i, id := range pinned {
		if got := tb.get(id); got != []string{"US", "EU"}[i%2] {
			t.Fatalf("pin of %s = %q", id, got)
		}
	}
	passed := 0
	const others = 100000
	for i := range others {
		h := maphash.Bytes(tb.seed, fmt.Appendf(nil, "other-%d", i))
		if tb.mayHold(h) {
			passed++
		}
	}
	if rate := float64(passed) / others; rate > 0.06 {
		t.Fatalf("the filter let %.1f%% of ids without a pin through, want about 2.5%%", 100*rate)
	}
	empty := newPinTableBuilder(0, 0).finish()
	if empty.get([]byte("x")) != "" || empty.mayHold(maphash.Bytes(empty.seed, []byte("x"))) {
		t.Fatal("an empty table's filter lets an id through")
	}
}
