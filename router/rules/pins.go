package rules

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PinChange is an invalidation of cached pins.
type PinChange struct {
	// UserID is the user whose pin changed; empty when All is set.
	UserID string
	// All says every cached pin may be out of date (the subscription was
	// re-established and changes may have been missed).
	All bool
}

// PinSource is where Pins reads per-user pins from: Redis in production
// (connectors/redis.Rules).
type PinSource interface {
	// LookupPins returns the jurisdiction pinned for each user id ("" for
	// none) in one round trip.
	LookupPins(ctx context.Context, userIDs [][]byte) ([]string, error)
	// WatchPins returns a channel of invalidations until ctx ends. It may be
	// nil and need not be closed.
	WatchPins(ctx context.Context) <-chan PinChange
}

// PinsOptions tune Pins. The zero value is usable.
type PinsOptions struct {
	// Size is the most user ids cached (pinned or not). Default 100000.
	Size int
	// TTL is how long a cached answer is trusted even without an
	// invalidation, a backstop for a lost one. Default 1m.
	TTL time.Duration
	// Registerer, if not nil, gets the cache's metrics. Default nil (none).
	Registerer prometheus.Registerer
}

// Pins answers "is this user pinned to a jurisdiction?" for a batch of
// events: from a bounded in-process cache (negative answers too), and for
// the rest in one round trip to the source. Run follows invalidations; it
// must run for pins and unpins to be seen before the TTL.
type Pins struct {
	src  PinSource
	opts PinsOptions

	mu      sync.Mutex
	entries map[string]*list.Element // of *pinEntry
	lru     list.List                // front: most recently used
	gen     uint64                   // bumped by every invalidation

	lookups *prometheus.CounterVec
}

type pinEntry struct {
	user         string
	jurisdiction string
	expires      time.Time
}

// NewPins returns a pin cache reading from src.
func NewPins(src PinSource, opts PinsOptions) *Pins {
	if opts.Size <= 0 {
		opts.Size = 100000
	}
	if opts.TTL <= 0 {
		opts.TTL = time.Minute
	}
	p := &Pins{src: src, opts: opts, entries: map[string]*list.Element{}}
	p.lookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "residency_pins_lookups_total",
		Help: "User ids looked up for pins, by where the answer came from (cache, source).",
	}, []string{"from"})
	if opts.Registerer != nil {
		// A second Pins on the same registry keeps its counts to itself.
		_ = opts.Registerer.Register(p.lookups)
	}
	return p
}

// Lookup returns the jurisdiction pinned for each user id, "" for none. Ids
// not cached are fetched in one round trip; an error from the source is
// returned (wrapped) and nothing is guessed.
func (p *Pins) Lookup(ctx context.Context, userIDs [][]byte) ([]string, error) {
	out := make([]string, len(userIDs))
	now := time.Now()
	var miss []int
	p.mu.Lock()
	for i, id := range userIDs {
		if el, ok := p.entries[string(id)]; ok {
			e := el.Value.(*pinEntry)
			if now.Before(e.expires) {
				out[i] = e.jurisdiction
				p.lru.MoveToFront(el)
				continue
			}
		}
		miss = append(miss, i)
	}
	gen := p.gen
	p.mu.Unlock()
	p.lookups.WithLabelValues("cache").Add(float64(len(userIDs) - len(miss)))
	if len(miss) == 0 {
		return out, nil
	}

	// Ask once per distinct user.
	first := make(map[string]int, len(miss))
	var ask [][]byte
	for _, i := range miss {
		if _, ok := first[string(userIDs[i])]; !ok {
			first[string(userIDs[i])] = len(ask)
			ask = append(ask, userIDs[i])
		}
	}
	p.lookups.WithLabelValues("source").Add(float64(len(ask)))
	got, err := p.src.LookupPins(ctx, ask)
	if err != nil {
		return nil, fmt.Errorf("rules: pins: %w", err)
	}
	if len(got) != len(ask) {
		return nil, fmt.Errorf("rules: pins: source answered %d of %d users", len(got), len(ask))
	}
	for _, i := range miss {
		out[i] = got[first[string(userIDs[i])]]
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gen != gen {
		// An invalidation arrived while we asked: the answers may predate
		// it, so use them for this batch but do not cache them.
		return out, nil
	}
	exp := now.Add(p.opts.TTL)
	for n, id := range ask {
		p.put(string(id), got[n], exp)
	}
	return out, nil
}

// put caches an answer, evicting the least recently used beyond Size.
// p.mu must be held.
func (p *Pins) put(user, jurisdiction string, expires time.Time) {
	if el, ok := p.entries[user]; ok {
		e := el.Value.(*pinEntry)
		e.jurisdiction, e.expires = jurisdiction, expires
		p.lru.MoveToFront(el)
		return
	}
	p.entries[user] = p.lru.PushFront(&pinEntry{user: user, jurisdiction: jurisdiction, expires: expires})
	for p.lru.Len() > p.opts.Size {
		el := p.lru.Back()
		p.lru.Remove(el)
		delete(p.entries, el.Value.(*pinEntry).user)
	}
}

// invalidate forgets one user, or everyone.
func (p *Pins) invalidate(c PinChange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	if c.All {
		p.entries = map[string]*list.Element{}
		p.lru.Init()
		return
	}
	if el, ok := p.entries[c.UserID]; ok {
		p.lru.Remove(el)
		delete(p.entries, c.UserID)
	}
}

// Len returns how many user ids are cached.
func (p *Pins) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

// Run follows invalidations until ctx ends; it returns nil then.
func (p *Pins) Run(ctx context.Context) error {
	ch := p.src.WatchPins(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-ch:
			if !ok {
				ch = nil
				continue
			}
			p.invalidate(c)
		}
	}
}
