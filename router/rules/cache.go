package rules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Head names the current version of a Source by number and content.
type Head struct {
	// Version is the current version number; 0 when none was applied.
	Version int64
	// Digest is the hex SHA-256 of its content (Ruleset.Digest); "" when
	// Version is 0.
	Digest string
}

// Source is where a Cache reads rulesets from: the ruleset history in
// Redis in production (connectors/redis.Rules), a StaticSource for
// `--rules FILE` and tests.
type Source interface {
	// Latest returns the current version's number and digest (the zero
	// Head when none was applied).
	Latest(ctx context.Context) (Head, error)
	// Load returns the given version, validated and compiled, with its
	// version number set.
	Load(ctx context.Context, version int64) (*Ruleset, error)
	// Watch returns a channel that receives a value when a new version may
	// be current, until ctx ends. It may be nil and need not be closed.
	Watch(ctx context.Context) <-chan struct{}
}

// Defaults of CacheOptions.
const (
	// DefaultPollInterval is the default of CacheOptions.PollInterval.
	DefaultPollInterval = 500 * time.Millisecond
	// DefaultStalenessBound is the default of CacheOptions.StalenessBound.
	DefaultStalenessBound = 30 * time.Second
	// DefaultCheckTimeout is the default of CacheOptions.CheckTimeout.
	DefaultCheckTimeout = time.Second
)

// CacheOptions tune a Cache. The zero value is usable.
type CacheOptions struct {
	// PollInterval is how often the source is checked besides
	// announcements. Default 500ms, so a missed announcement delays a new
	// version by at most that.
	PollInterval time.Duration
	// StalenessBound is how long the last-known-good ruleset stays usable
	// after the last successful check; then Current fails closed with
	// ErrStale. Default 30s.
	StalenessBound time.Duration
	// CheckTimeout bounds one check of the source. Default 1s.
	CheckTimeout time.Duration
	// Registerer, if not nil, gets the cache's metrics. Default nil (none).
	Registerer prometheus.Registerer
	// Logger receives version switches and check failures. Default: discard.
	Logger *slog.Logger
}

// Cache keeps the current ruleset in memory, compiled, for every router and
// sink: Current is an atomic load. Run follows the source.
type Cache struct {
	src  Source
	opts CacheOptions
	log  *slog.Logger

	current atomic.Pointer[Ruleset]
	start   time.Time    // monotonic origin of lastOK
	lastOK  atomic.Int64 // nanoseconds after start of the last successful check; 0: none
	lastErr atomic.Pointer[error]
	blocked atomic.Pointer[error] // ErrContentChanged or ErrHistoryLost: Current fails at once; nil otherwise

	loaded     chan struct{}
	loadedOnce sync.Once

	// Used by Run's goroutine only.
	failing    bool   // the last check failed
	failReason string // its reason label
	stale      bool   // ErrStale has been logged

	version    prometheus.Gauge
	loadErrors *prometheus.CounterVec
}

// Error reasons, the values of the load_errors_total "reason" label.
const (
	reasonUnavailable = "unavailable"
	reasonNotFound    = "not_found"
	reasonCorrupt     = "corrupt"
	reasonChanged     = "content_changed"
	reasonLost        = "history_lost"
	reasonOther       = "other"
)

// NewCache returns a cache reading from src; call Run to load and follow.
func NewCache(src Source, opts CacheOptions) *Cache {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.StalenessBound <= 0 {
		opts.StalenessBound = DefaultStalenessBound
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Cache{src: src, opts: opts, log: opts.Logger, loaded: make(chan struct{}), start: time.Now()}
	c.version = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "residency_rules_version",
		Help: "Version of the ruleset in use (0 before the first load).",
	})
	c.loadErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "residency_rules_load_errors_total",
		Help: "Failed checks of the rules source, by reason (unavailable, not_found, corrupt, content_changed, history_lost, other).",
	}, []string{"reason"})
	for _, r := range []string{reasonUnavailable, reasonNotFound, reasonCorrupt, reasonChanged, reasonLost, reasonOther} {
		c.loadErrors.WithLabelValues(r)
	}
	if reg := opts.Registerer; reg != nil {
		cs := []prometheus.Collector{
			c.version, c.loadErrors,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "residency_rules_age_seconds",
				Help: "Seconds since the ruleset in use was last confirmed against the source.",
			}, c.age),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "residency_rules_usable",
				Help: "1 when a ruleset is loaded and within the staleness bound, 0 when routing must stop.",
			}, func() float64 {
				if _, err := c.Current(); err != nil {
					return 0
				}
				return 1
			}),
		}
		for _, col := range cs {
			if err := reg.Register(col); err != nil {
				c.log.Warn("rules: metric not registered", "err", err)
			}
		}
	}
	return c
}

// age is the seconds since the last successful check (0 before any).
func (c *Cache) age() float64 {
	ok := c.lastOK.Load()
	if ok == 0 {
		return 0
	}
	return (time.Since(c.start) - time.Duration(ok)).Seconds()
}

// Current returns the ruleset in force. It does not touch the source. It
// returns ErrNoRuleset before the first load; ErrContentChanged or
// ErrHistoryLost at once when the source no longer holds the content in
// use under its number (see Run); and ErrStale once the source has not
// been confirmed for longer than the staleness bound. On any error the
// caller must stop routing.
func (c *Cache) Current() (*Ruleset, error) {
	r := c.current.Load()
	if r == nil {
		if e := c.lastErr.Load(); e != nil {
			return nil, fmt.Errorf("rules: %w: %w", ErrNoRuleset, *e)
		}
		return nil, fmt.Errorf("rules: %w", ErrNoRuleset)
	}
	if e := c.blocked.Load(); e != nil {
		return nil, *e
	}
	last := time.Duration(c.lastOK.Load())
	if age := time.Since(c.start) - last; age > c.opts.StalenessBound {
		// No age in the text: it is the readiness state, logged when it
		// changes, and must not change with every poll.
		err := fmt.Errorf("rules: %w since %s: version %d not confirmed within the bound (%s)",
			ErrStale, c.start.Add(last).UTC().Format(time.RFC3339Nano), r.Version(), c.opts.StalenessBound)
		if e := c.lastErr.Load(); e != nil {
			err = fmt.Errorf("%w: %w", err, *e)
		}
		return nil, err
	}
	return r, nil
}

// Loaded returns a channel closed once the first ruleset is loaded.
func (c *Cache) Loaded() <-chan struct{} { return c.loaded }

// Run loads the current version, then follows announcements and polls until
// ctx ends; it returns nil then. Failures do not end it: it keeps the
// last-known-good ruleset and retries, and Current reports ErrStale once the
// staleness bound passes.
//
// Every check compares the source's current version by number and digest
// with the ruleset in use. The same number and digest confirm it. A higher
// number is loaded and used. The same number with another digest (a
// version number reused after Redis lost its data) is ErrContentChanged,
// and a lower number ErrHistoryLost: Current fails at once (fail closed),
// until the source confirms the content in use again or a version above
// the one in use is applied, which is then loaded.
func (c *Cache) Run(ctx context.Context) error {
	watch := c.src.Watch(ctx)
	tick := time.NewTicker(c.opts.PollInterval)
	defer tick.Stop()
	c.check(ctx)
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-watch:
			if !ok {
				watch = nil
			}
			c.check(ctx)
		case <-tick.C:
			c.check(ctx)
		}
	}
}

// check asks the source for its current version and loads it if new.
func (c *Cache) check(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, c.opts.CheckTimeout)
	defer cancel()
	err := c.refresh(cctx)
	if ctx.Err() != nil {
		return // shutting down: not a failure of the source
	}
	if err != nil && cctx.Err() != nil && !errors.Is(err, ErrUnavailable) {
		err = fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	c.observe(err)
}

// refresh does the work of check.
func (c *Cache) refresh(ctx context.Context) error {
	head, err := c.src.Latest(ctx)
	if err != nil {
		return err
	}
	cur := c.current.Load()
	if cur != nil {
		switch {
		case head.Version == cur.Version() && head.Digest == cur.Digest():
			c.unblock()
			return nil
		case head.Version == cur.Version():
			return c.block(fmt.Errorf("rules: %w: version %d now has digest %s in the source, but the version %d in use has digest %s "+
				"(Redis lost its data and rules were applied again?): fail closed until a version above %d is applied",
				ErrContentChanged, head.Version, ShortDigest(head.Digest), cur.Version(), cur.ShortDigest(), cur.Version()))
		case head.Version < cur.Version():
			// Versions only grow (a rollback is a new version): an older
			// current version means the source lost history (Redis lost its
			// data, or was restored from an old snapshot). Never switch back.
			return c.block(fmt.Errorf("rules: %w: the source's current version is %d, below version %d in use "+
				"(Redis lost its data or was restored from an old snapshot?): fail closed until version %d (digest %s) is back or a version above %d is applied",
				ErrHistoryLost, head.Version, cur.Version(), cur.Version(), cur.ShortDigest(), cur.Version()))
		}
	}
	next, err := c.src.Load(ctx, head.Version)
	if err != nil {
		return err
	}
	if next.Version() != head.Version || (head.Digest != "" && next.Digest() != head.Digest) {
		return fmt.Errorf("rules: version %d changed while it was loaded: %w", head.Version, ErrCorrupt)
	}
	c.lastOK.Store(int64(max(time.Since(c.start), 1))) // before Current can see next
	c.current.Store(next)
	c.unblock()
	c.version.Set(float64(next.Version()))
	if cur != nil {
		c.log.Info("rules: switched ruleset version", "version", next.Version(), "digest", next.ShortDigest(), "previous", cur.Version())
	} else {
		c.log.Info("rules: loaded ruleset", "version", next.Version(), "digest", next.ShortDigest())
	}
	c.loadedOnce.Do(func() { close(c.loaded) })
	return nil
}

// block makes Current fail with err at once, and returns it.
func (c *Cache) block(err error) error {
	c.blocked.Store(&err)
	return err
}

// unblock lets Current hand out the ruleset in use again (observe logs it).
func (c *Cache) unblock() { c.blocked.Store(nil) }

// observe records the outcome of a check: metrics, logs (on changes only)
// and the state Current reads.
func (c *Cache) observe(err error) {
	if err == nil {
		c.lastOK.Store(int64(max(time.Since(c.start), 1)))
		c.lastErr.Store(nil)
		if c.failing || c.stale {
			c.log.Info("rules: source confirmed again", "version", c.current.Load().Version())
		}
		c.failing, c.stale = false, false
		return
	}
	reason := reasonOther
	switch {
	case errors.Is(err, ErrUnavailable):
		reason = reasonUnavailable
	case errors.Is(err, ErrNotFound):
		reason = reasonNotFound
	case errors.Is(err, ErrCorrupt):
		reason = reasonCorrupt
	case errors.Is(err, ErrContentChanged):
		reason = reasonChanged
	case errors.Is(err, ErrHistoryLost):
		reason = reasonLost
	}
	c.loadErrors.WithLabelValues(reason).Inc()
	c.lastErr.Store(&err)
	var kept int64 = -1
	if r := c.current.Load(); r != nil {
		kept = r.Version()
	}
	if !c.failing || c.failReason != reason {
		switch {
		case reason == reasonChanged || reason == reasonLost:
			c.log.Error("rules: the source no longer holds the ruleset in use; routing must stop (fail closed)", "err", err, "reason", reason)
		case c.blocked.Load() != nil:
			c.log.Warn("rules: check failed; routing stays stopped", "err", err, "reason", reason, "version", kept)
		case kept >= 0:
			c.log.Warn("rules: check failed; keeping the last-known-good ruleset until the staleness bound",
				"err", err, "reason", reason, "version", kept, "bound", c.opts.StalenessBound)
		default:
			c.log.Warn("rules: check failed; no ruleset loaded", "err", err, "reason", reason)
		}
	}
	c.failing, c.failReason = true, reason
	if _, cerr := c.Current(); cerr != nil && errors.Is(cerr, ErrStale) && !c.stale {
		c.stale = true
		c.log.Error("rules: ruleset is stale; routing must stop (fail closed)", "err", cerr)
	}
}

// StaticSource is a Source holding one ruleset in memory: `--rules FILE`
// mode, and tests that switch versions with Set.
type StaticSource struct {
	mu   sync.Mutex
	r    *Ruleset
	subs map[chan struct{}]struct{}
}

// NewStaticSource returns a source whose current version is r.
func NewStaticSource(r *Ruleset) *StaticSource {
	return &StaticSource{r: r, subs: map[chan struct{}]struct{}{}}
}

// Set makes r the current version and tells watchers.
func (s *StaticSource) Set(r *Ruleset) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.r = r
	for ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Latest returns the held ruleset's version and digest.
func (s *StaticSource) Latest(context.Context) (Head, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Head{Version: s.r.Version(), Digest: s.r.Digest()}, nil
}

// Load returns the held ruleset if it has the given version.
func (s *StaticSource) Load(_ context.Context, version int64) (*Ruleset, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.r.Version() != version {
		return nil, fmt.Errorf("rules: version %d: %w", version, ErrNotFound)
	}
	return s.r, nil
}

// Watch returns a channel told of each Set until ctx ends.
func (s *StaticSource) Watch(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	return ch
}
