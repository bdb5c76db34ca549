package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/stream"
)

// PinEventKind says what a PinEvent reports.
type PinEventKind int

// The kinds of PinEvent.
const (
	// PinChanged: the pin of PinEvent.UserID was set or removed.
	PinChanged PinEventKind = iota + 1
	// PinsSubscribed: the subscription to changes was (re-)established;
	// changes made while it was down may have been missed.
	PinsSubscribed
	// PinsAlive: the subscription answered a probe sent at PinEvent.At:
	// every change announced before then has been delivered.
	PinsAlive
	// PinsLost: the subscription broke (PinEvent.Err says how); changes
	// are not reported until the next PinsSubscribed.
	PinsLost
)

// PinEvent is what a PinStore's watch reports.
type PinEvent struct {
	// Kind says what happened.
	Kind PinEventKind
	// UserID is the user whose pin changed (PinChanged).
	UserID string
	// At is when the probe was sent (PinsAlive).
	At time.Time
	// Err is why the subscription broke (PinsLost).
	Err error
}

// PinStore is where Pins loads the pin set from and follows it:
// connectors/redis.Rules (a Redis hash, a pub/sub channel of the user ids
// whose pin changed, and probes of that subscription).
type PinStore interface {
	// CountPins returns about how many pins there are (to size memory).
	CountPins(ctx context.Context) (int, error)
	// ScanPins returns one page of about count pins from cursor (0: the
	// first page) and the cursor of the next one (0: this was the last).
	// A pin present for the whole scan is returned at least once.
	ScanPins(ctx context.Context, cursor uint64, count int) (page []Pin, next uint64, err error)
	// LookupPins returns the jurisdiction pinned for each user id ("" for
	// none) in one round trip.
	LookupPins(ctx context.Context, userIDs [][]byte) ([]string, error)
	// WatchPins reports changes, (re-)subscriptions and live probes until
	// ctx ends; then the channel is closed. Every change of a pin made
	// while the subscription is up is reported after it is made.
	WatchPins(ctx context.Context) <-chan PinEvent
}

// Defaults of PinsOptions.
const (
	// DefaultResyncInterval is the default of PinsOptions.ResyncInterval.
	DefaultResyncInterval = 5 * time.Minute
	// DefaultPinsPageSize is the default of PinsOptions.PageSize.
	DefaultPinsPageSize = 2000
)

// PinsOptions tune Pins. The zero value is usable.
type PinsOptions struct {
	// StalenessBound is how long the pin set stays usable after it was
	// last confirmed against the store (a full load, or a live probe of an
	// unbroken subscription since one); then Pins fails closed with
	// ErrPinsStale. Default 30s (DefaultStalenessBound, as the ruleset's).
	StalenessBound time.Duration
	// ResyncInterval is how often the whole pin set is read again, a
	// backstop for a change announced by nothing (a pin written to Redis
	// by hand). It is also read again after every re-subscription. Default
	// 5m.
	ResyncInterval time.Duration
	// PageSize is the number of pins asked for per page of a full read.
	// Default 2000.
	PageSize int
	// Retry paces retries of a failed full read. Default: 100ms doubling
	// to 5s.
	Retry stream.Retry
	// Registerer, if not nil, gets the metrics. Default nil (none).
	Registerer prometheus.Registerer
	// Logger receives loads, failures and staleness (never user ids).
	// Default: discard.
	Logger *slog.Logger
}

// subscribeWait is how long Run waits for the subscription before the
// first full read (reading first could miss changes made meanwhile; it
// is read again once the subscription comes).
const subscribeWait = 2 * time.Second

// maxChangeBatch is the most changes read back in one round trip.
const maxChangeBatch = 1024

// Pins keeps the whole pin set in memory, compact (see PinView), kept
// current from a PinStore: one full read at start (in pages), then every
// change announced (the user's pin read again), a full read again after
// every re-subscription and every ResyncInterval. Pins hands out the
// current view, without a round trip, while it is confirmed within the
// staleness bound; Run follows the store.
type Pins struct {
	src  PinStore
	opts PinsOptions
	log  *slog.Logger

	snap    atomic.Pointer[pinSnapshot]
	start   time.Time    // monotonic origin of confirmed
	confirm atomic.Int64 // nanoseconds after start when the view was last confirmed; 0: never
	lastErr atomic.Pointer[error]
	loaded  chan struct{}

	// Used by Run's goroutine only.
	subGen    int  // subscriptions seen
	syncedGen int  // subGen when the last full read that succeeded began; -1: none valid
	want      bool // a full read is due
	canRead   bool // subscribed once, or waited subscribeWait for it: a full read may begin
	failing   bool // the last full read failed (logged)
	stale     bool // staleness logged

	resyncs *prometheus.CounterVec
	changes prometheus.Counter
}

// NewPins returns the pin set of src; call Run to load and follow it.
func NewPins(src PinStore, opts PinsOptions) *Pins {
	if opts.StalenessBound <= 0 {
		opts.StalenessBound = DefaultStalenessBound
	}
	if opts.ResyncInterval <= 0 {
		opts.ResyncInterval = DefaultResyncInterval
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPinsPageSize
	}
	if opts.Retry.Min <= 0 {
		opts.Retry.Min = 100 * time.Millisecond
	}
	if opts.Retry.Max <= 0 {
		opts.Retry.Max = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Pins{src: src, opts: opts, log: opts.Logger, start: time.Now(), loaded: make(chan struct{}), syncedGen: -1, want: true}
	p.resyncs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "residency_pins_resyncs_total",
		Help: "Full reads of the pin set from Redis, by result (ok, failed).",
	}, []string{"result"})
	p.resyncs.WithLabelValues("ok")
	p.resyncs.WithLabelValues("failed")
	p.changes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "residency_pins_changes_total",
		Help: "Pin changes announced by Redis and applied to the pin set in memory.",
	})
	if reg := opts.Registerer; reg != nil {
		for _, c := range []prometheus.Collector{
			p.resyncs, p.changes,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "residency_pins",
				Help: "Pins in memory.",
			}, func() float64 {
				if s := p.snap.Load(); s != nil {
					return float64(s.n)
				}
				return 0
			}),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "residency_pins_bytes",
				Help: "Bytes of memory the pin set in memory holds (about).",
			}, func() float64 { return float64(p.Bytes()) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "residency_pins_age_seconds",
				Help: "Seconds since the pin set in memory was last confirmed against Redis.",
			}, func() float64 { return p.ageAt(time.Now()).Seconds() }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "residency_pins_usable",
				Help: "1 when the pin set is loaded and within the staleness bound, 0 when routing must stop.",
			}, func() float64 {
				if _, err := p.Pins(); err != nil {
					return 0
				}
				return 1
			}),
		} {
			if err := reg.Register(c); err != nil {
				p.log.Warn("pins: metric not registered", "err", err)
			}
		}
	}
	return p
}

// ageAt is how long before now the view was last confirmed (0 before any).
func (p *Pins) ageAt(now time.Time) time.Duration {
	c := p.confirm.Load()
	if c == 0 {
		return 0
	}
	return now.Sub(p.start) - time.Duration(c)
}

// Pins returns the current view of the pin set, without a round trip. It
// returns ErrNoPins before the first full read, and ErrPinsStale once the
// view has not been confirmed for longer than the staleness bound (the
// store out of reach, or the subscription to its changes broken and no
// full read since): then the caller must stop routing. The errors say
// since when and why.
func (p *Pins) Pins() (PinView, error) {
	s := p.snap.Load()
	if s == nil {
		if e := p.lastErr.Load(); e != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoPins, *e)
		}
		return nil, ErrNoPins
	}
	c := time.Duration(p.confirm.Load())
	if age := time.Since(p.start) - c; age > p.opts.StalenessBound {
		// No age in the text: it is the readiness state, logged when it
		// changes, and must not change with every poll.
		err := fmt.Errorf("%w since %s: not confirmed within the bound (%s)", ErrPinsStale,
			p.start.Add(c).UTC().Format(time.RFC3339Nano), p.opts.StalenessBound)
		if e := p.lastErr.Load(); e != nil {
			err = fmt.Errorf("%w: %w", err, *e)
		}
		return nil, err
	}
	return s, nil
}

// Lookup returns the jurisdiction pinned for each user id ("" for none)
// from the current view (see Pins), without a round trip; it fails as
// Pins does. For callers of the former batch lookup (router.PinLookup).
func (p *Pins) Lookup(_ context.Context, userIDs [][]byte) ([]string, error) {
	v, err := p.Pins()
	if err != nil {
		return nil, err
	}
	out := make([]string, len(userIDs))
	for i, id := range userIDs {
		out[i] = v.Pin(id)
	}
	return out, nil
}

// Len returns the number of pins in memory (0 before the first load).
func (p *Pins) Len() int {
	if s := p.snap.Load(); s != nil {
		return s.n
	}
	return 0
}

// Bytes returns about how many bytes of memory the pin set in memory holds
// (its table, and the changes kept apart from it); 0 before the first load.
func (p *Pins) Bytes() int {
	s := p.snap.Load()
	if s == nil {
		return 0
	}
	n := s.base.bytes()
	for u, j := range s.over {
		n += len(u) + len(j) + 48 // two string headers and the map's share
	}
	return n
}

// MappedBytes returns how many bytes of the pin set's table are mapped
// outside the Go heap (router/rules/pinmem.go: on Linux, unless mapping
// failed and the table fell back to the heap); 0 before the first load.
// The Go runtime's memory limit does not count them.
func (p *Pins) MappedBytes() int {
	s := p.snap.Load()
	if s == nil {
		return 0
	}
	return s.base.mem.mapped()
}

// Loaded returns a channel closed once the pin set is first loaded.
func (p *Pins) Loaded() <-chan struct{} { return p.loaded }

// Run loads the pin set and follows the store until ctx ends; it returns
// nil then. Failures do not end it: it keeps the last view, retries, and
// Pins reports ErrPinsStale once the staleness bound passes.
func (p *Pins) Run(ctx context.Context) error {
	ev := p.src.WatchPins(ctx)
	resync := time.NewTicker(p.opts.ResyncInterval)
	defer resync.Stop()
	waited := time.NewTimer(subscribeWait)
	defer waited.Stop()
	attempt := 0
	check := time.NewTicker(min(p.opts.StalenessBound/4, time.Second))
	defer check.Stop()
	var retry <-chan time.Time
	for ctx.Err() == nil {
		if p.want && p.canRead && retry == nil {
			err := p.resync(ctx, ev)
			if ctx.Err() != nil {
				return nil
			}
			if err != nil {
				p.failed(err)
				attempt++
				retry = time.After(p.opts.Retry.Delay(attempt))
			} else {
				attempt = 0
			}
			continue
		}
		select {
		case <-ctx.Done():
		case e, ok := <-ev:
			if !ok {
				ev = nil
				continue
			}
			p.handle(ctx, e, ev)
		case <-resync.C:
			p.want = true
		case <-check.C:
			p.checkStale()
		case <-waited.C:
			p.canRead = true
		case <-retry:
			retry = nil
		}
	}
	return nil
}

// handle applies one event (and, for a change, the changes queued behind
// it) outside a full read.
func (p *Pins) handle(ctx context.Context, e PinEvent, ev <-chan PinEvent) {
	switch e.Kind {
	case PinsSubscribed:
		p.subGen++
		p.want, p.canRead = true, true
	case PinsAlive:
		if p.syncedGen == p.subGen && p.snap.Load() != nil {
			p.confirmed(e.At)
		}
	case PinsLost:
		err := fmt.Errorf("the subscription to pin changes broke: %w", e.Err)
		p.lastErr.Store(&err)
		if !p.failing {
			p.failing = true
			p.log.Warn("pins: the subscription to pin changes broke; the pins in memory stay in force until the staleness bound",
				"err", e.Err, "bound", p.opts.StalenessBound)
		}
	case PinChanged:
		users := []string{e.UserID}
		var next *PinEvent
	drain:
		for len(users) < maxChangeBatch {
			select {
			case e2, ok := <-ev:
				if !ok {
					break drain
				}
				if e2.Kind == PinChanged {
					users = append(users, e2.UserID)
					continue
				}
				next = &e2
				break drain
			default:
				break drain
			}
		}
		if p.snap.Load() != nil {
			if err := p.apply(ctx, users); err != nil {
				// Not applied: no probe may confirm the view until a full
				// read has.
				p.syncedGen, p.want = -1, true
				p.failed(err)
			}
		}
		if next != nil {
			p.handle(ctx, *next, ev)
		}
	}
}

// apply reads the pins of users again and puts them in force.
func (p *Pins) apply(ctx context.Context, users []string) error {
	changes, err := p.read(ctx, users)
	if err != nil {
		return err
	}
	p.publish(p.snap.Load().with(changes))
	p.changes.Add(float64(len(users)))
	return nil
}

// read reads the pins of users (user id → jurisdiction, "" for none), in
// round trips of at most maxChangeBatch users.
func (p *Pins) read(ctx context.Context, users []string) (map[string]string, error) {
	changes := make(map[string]string, len(users))
	for len(users) > 0 {
		k := min(len(users), maxChangeBatch)
		ids := make([][]byte, k)
		for i, u := range users[:k] {
			ids[i] = []byte(u)
		}
		got, err := p.src.LookupPins(ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("pins: read changed pins: %w", err)
		}
		if len(got) != k {
			return nil, fmt.Errorf("pins: the store answered %d of %d users", len(got), k)
		}
		for i, u := range users[:k] {
			changes[u] = got[i]
		}
		users = users[k:]
	}
	return changes, nil
}

// publish puts s in force, compacting it first when its changes have grown
// large against its table.
func (p *Pins) publish(s *pinSnapshot) {
	if len(s.over) > max(4096, s.base.n/8) {
		if c, err := s.compact(); err == nil {
			s = c
		} else {
			p.log.Warn("pins: compaction failed; keeping the changes apart", "err", err)
		}
	}
	p.snap.Store(s)
}

// confirmed records that the view was confirmed as of at.
func (p *Pins) confirmed(at time.Time) {
	d := int64(max(at.Sub(p.start), 1))
	if d > p.confirm.Load() {
		p.confirm.Store(d)
	}
	if p.failing || p.stale {
		p.log.Info("pins: confirmed again", "pins", p.Len())
		p.failing, p.stale = false, false
	}
	p.lastErr.Store(nil)
}

// failed records a failure (logged once per run of failures) and logs
// staleness once.
func (p *Pins) failed(err error) {
	p.lastErr.Store(&err)
	if !p.failing {
		p.failing = true
		if p.snap.Load() == nil {
			p.log.Warn("pins: reading the pin set failed; no pins loaded yet", "err", err)
		} else {
			p.log.Warn("pins: reading the pin set failed; keeping the pins in memory until the staleness bound", "err", err, "bound", p.opts.StalenessBound)
		}
	}
	p.checkStale()
}

// checkStale logs, once, that the pin set went stale.
func (p *Pins) checkStale() {
	if _, err := p.Pins(); errors.Is(err, ErrPinsStale) && !p.stale {
		p.stale = true
		p.log.Error("pins: the pin set is stale; routing must stop (fail closed)", "err", err)
	}
}

// resync reads the whole pin set, in pages, applying the changes announced
// meanwhile between pages, and puts it in force. The first one builds the
// table; later ones compare and keep only the differences (memory stays
// about one table).
func (p *Pins) resync(ctx context.Context, ev <-chan PinEvent) error {
	began, gen := time.Now(), p.subGen
	p.want = false
	touched := map[string]bool{} // users announced during the read: read again, their answer wins
	var err error
	if p.snap.Load() == nil {
		err = p.load(ctx, ev, touched, began)
	} else {
		err = p.compare(ctx, ev, touched)
	}
	if err != nil {
		p.want = true
		p.resyncs.WithLabelValues("failed").Inc()
		return err
	}
	p.resyncs.WithLabelValues("ok").Inc()
	// The view is the store's as of the start of the read. Probes confirm
	// it further only while the subscription it began under lasts.
	p.confirmed(began)
	p.syncedGen = gen
	if gen != p.subGen {
		p.want = true // re-subscribed during the read: read again
	}
	select {
	case <-p.loaded:
	default:
		close(p.loaded)
		s := p.snap.Load()
		p.log.Info("pins: loaded", "pins", s.n, "bytes", s.base.bytes(), "took_ms", time.Since(began).Milliseconds())
	}
	return nil
}

// between handles the events queued during a full read: changes are
// applied at once when a view is in force (and their users remembered in
// touched either way), re-subscriptions counted, probes ignored (a read in
// progress confirms nothing).
func (p *Pins) between(ctx context.Context, ev <-chan PinEvent, touched map[string]bool) error {
	var users []string
	for {
		select {
		case e, ok := <-ev:
			if !ok {
				return p.flush(ctx, users)
			}
			switch e.Kind {
			case PinChanged:
				users = append(users, e.UserID)
				touched[e.UserID] = true
				if len(users) == maxChangeBatch {
					if err := p.flush(ctx, users); err != nil {
						return err
					}
					users = users[:0]
				}
			case PinsSubscribed:
				p.subGen++
			}
			continue
		default:
		}
		return p.flush(ctx, users)
	}
}

// flush applies changes read between pages, if a view is in force.
func (p *Pins) flush(ctx context.Context, users []string) error {
	if len(users) == 0 || p.snap.Load() == nil {
		return nil
	}
	return p.apply(ctx, users)
}

// load builds the first table from a full read that began at began.
func (p *Pins) load(ctx context.Context, ev <-chan PinEvent, touched map[string]bool, began time.Time) error {
	n, err := p.src.CountPins(ctx)
	if err != nil {
		return fmt.Errorf("pins: count: %w", err)
	}
	var b *pinTableBuilder
	var cursor uint64
	for {
		page, next, err := p.src.ScanPins(ctx, cursor, p.opts.PageSize)
		if err != nil {
			return fmt.Errorf("pins: read: %w", err)
		}
		if b == nil {
			avg := 16 // bytes per packed id and its prefix, from the first page
			if len(page) > 0 {
				sum := 0
				var buf packBuf
				for _, pin := range page {
					_, id := packID([]byte(pin.UserID), &buf)
					sum += len(id) + 1
				}
				avg = sum/len(page) + 1
			}
			b = newPinTableBuilder(n+n/32, (n+n/32)*avg)
		}
		for _, pin := range page {
			if pin.Jurisdiction != "" {
				if err := b.add([]byte(pin.UserID), pin.Jurisdiction); err != nil {
					return err
				}
			}
		}
		if err := p.between(ctx, ev, touched); err != nil {
			return err
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	t := b.finish()
	s := &pinSnapshot{base: t, n: t.n}
	if len(touched) > 0 {
		// Changed during the read: the table may hold an older answer.
		users := make([]string, 0, len(touched))
		for u := range touched {
			users = append(users, u)
		}
		changes, err := p.read(ctx, users)
		if err != nil {
			return err
		}
		s = s.with(changes)
	}
	p.confirm.Store(int64(max(began.Sub(p.start), 1))) // before the view can be seen
	p.publish(s)
	return nil
}

// compare reads the whole pin set and puts in force what differs from the
// view: pins added, changed or gone (a pin the read did not return was
// removed, unless it was announced during the read).
func (p *Pins) compare(ctx context.Context, ev <-chan PinEvent, touched map[string]bool) error {
	start := p.snap.Load()
	seenBase := make([]uint64, (len(start.base.slots)+63)/64)
	seenOver := map[string]bool{}
	diffs := map[string]string{}
	var cursor uint64
	for {
		page, next, err := p.src.ScanPins(ctx, cursor, p.opts.PageSize)
		if err != nil {
			return fmt.Errorf("pins: read: %w", err)
		}
		cur := p.snap.Load()
		for _, pin := range page {
			id := []byte(pin.UserID)
			if _, ok := start.over[pin.UserID]; ok {
				seenOver[pin.UserID] = true
			} else if i, ok := start.base.find(id); ok {
				seenBase[i/64] |= 1 << (i % 64)
			}
			if cur.Pin(id) != pin.Jurisdiction {
				diffs[pin.UserID] = pin.Jurisdiction
			}
		}
		if err := p.between(ctx, ev, touched); err != nil {
			return err
		}
		if next == 0 {
			break
		}
		cursor = next
	}
	start.base.each(func(i int, id []byte, _ string) {
		if seenBase[i/64]&(1<<(i%64)) == 0 {
			if _, inOver := start.over[string(id)]; !inOver {
				diffs[string(id)] = ""
			}
		}
	})
	for u, j := range start.over {
		if j != "" && !seenOver[u] {
			diffs[u] = ""
		}
	}
	for u := range touched {
		delete(diffs, u)
	}
	if len(diffs) > 0 {
		p.log.Info("pins: a full read found changes no announcement had brought", "changes", len(diffs))
		p.publish(p.snap.Load().with(diffs))
	}
	return nil
}
