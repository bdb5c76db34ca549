package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// Sink drains one pinned topic into one store. Create it with New, run it
// with Run, stop it by ending Run's context or with Close.
type Sink struct {
	cfg        Config
	sub        router.Subscriber
	store      Store
	quarantine router.Publisher
	rules      RulesSource
	dec        Decoder
	log        *slog.Logger
	m          *metrics

	notReady atomic.Pointer[error] // nil when ready
	revoked  atomic.Bool           // approval missing: writing stopped

	approvalMu sync.Mutex            // serialises observeApproval
	storeErr   atomic.Pointer[error] // last store failure, nil after a success

	mu      sync.Mutex
	running bool
	stop    context.CancelFunc
	done    chan struct{}
}

// New returns a sink reading the pinned topic from sub, writing to store,
// quarantining through quarantine (a publisher to the cluster holding
// cfg.QuarantineTopic), checking approval against rs and decoding with dec.
// It does not touch any of them.
func New(cfg Config, sub router.Subscriber, store Store, quarantine router.Publisher, rs RulesSource, dec Decoder) (*Sink, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if sub == nil || store == nil || quarantine == nil || rs == nil || dec == nil {
		return nil, fmt.Errorf("%w: subscriber, store, quarantine publisher, rules source and decoder are required", ErrConfig)
	}
	m, err := newMetrics(cfg.Registerer, cfg.Store)
	if err != nil {
		return nil, err
	}
	s := &Sink{cfg: cfg, sub: sub, store: store, quarantine: quarantine, rules: rs, dec: dec,
		log: cfg.Logger.With("store", cfg.Store, "region", cfg.Region, "topic", cfg.Topic), m: m}
	s.setNotReady(fmt.Errorf("%w: not started", ErrNotReady))
	return s, nil
}

// Check reports whether the ruleset in force lets this sink write: the
// region is defined, its pinned topic is the consumed topic, and the store
// is approved for it. It returns the ruleset, or an error wrapping
// ErrNoRuleset or ErrNotApproved that names the store, the region and the
// ruleset version.
func (s *Sink) Check() (*rules.Ruleset, error) {
	rs, err := s.rules.Current()
	if err != nil {
		return nil, fmt.Errorf("sink: store %q, region %q: %w: %w", s.cfg.Store, s.cfg.Region, ErrNoRuleset, err)
	}
	if rs == nil {
		return nil, fmt.Errorf("sink: store %q, region %q: %w", s.cfg.Store, s.cfg.Region, ErrNoRuleset)
	}
	if err := CheckApproval(rs, s.cfg.Store, s.cfg.Region, s.cfg.Topic); err != nil {
		return nil, err
	}
	if g, _ := rs.Region(s.cfg.Region); s.cfg.Cluster != "" && g.Cluster != s.cfg.Cluster {
		return nil, fmt.Errorf("sink: %w: store %q, region %q: the pinned topic moved to cluster %q in ruleset version %s (reading cluster %q)",
			ErrNotApproved, s.cfg.Store, s.cfg.Region, g.Cluster, rs.VersionString(), s.cfg.Cluster)
	}
	return rs, nil
}

// CheckApproval reports whether rs lets store hold the events of region read
// from topic: the region is defined, topic is its pinned topic, and the
// store is approved for it. The error wraps ErrNotApproved and names the
// store, the region and the ruleset version.
func CheckApproval(rs *rules.Ruleset, store, region, topic string) error {
	v := rs.VersionString()
	g, ok := rs.Region(region)
	switch {
	case !ok:
		return fmt.Errorf("sink: %w: region %q is not defined in ruleset version %s (store %q)", ErrNotApproved, region, v, store)
	case g.Topic != topic:
		return fmt.Errorf("sink: %w: store %q, region %q: topic %q is not the region's pinned topic %q in ruleset version %s",
			ErrNotApproved, store, region, topic, g.Topic, v)
	case !rs.Approves(store, region):
		return fmt.Errorf("sink: %w: ruleset version %s does not approve store %q for region %q", ErrNotApproved, v, store, region)
	}
	return nil
}

// Ready returns nil when the sink is running, approved, its store accepts
// writes and (for subscribers that tell) it has joined its group; otherwise
// an error saying why. The error wraps ErrNotApproved or ErrNoRuleset while
// writing is stopped for lack of approval, ErrNotReady otherwise.
func (s *Sink) Ready() error {
	if e := s.notReady.Load(); e != nil {
		return *e
	}
	if e := s.storeErr.Load(); e != nil {
		return fmt.Errorf("%w: store: %w", ErrNotReady, *e)
	}
	if gm, ok := s.sub.(router.GroupMember); ok && !gm.Joined() {
		return fmt.Errorf("%w: not a member of the consumer group yet", ErrNotReady)
	}
	return nil
}

func (s *Sink) setNotReady(err error) {
	s.notReady.Store(&err)
	s.m.ready.Set(0)
}

func (s *Sink) setReady() {
	s.notReady.Store(nil)
	s.m.ready.Set(1)
}

// Run checks the approval (returning ErrNotApproved or ErrNoRuleset without
// consuming anything when it is missing), then drains the topic until ctx
// ends or Close is called. The batch in hand is then written and committed
// within Config.DrainTimeout; events fetched but not committed are fetched
// again by the next member of the group. Run returns nil after a clean stop.
func (s *Sink) Run(ctx context.Context) error {
	if _, err := s.Check(); err != nil {
		s.setNotReady(err)
		s.m.approved.Set(0)
		return err
	}
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("sink: Run called twice")
	}
	ctx, stop := context.WithCancel(ctx)
	s.running, s.stop, s.done = true, stop, make(chan struct{})
	s.mu.Unlock()
	defer close(s.done)
	defer stop()

	s.m.approved.Set(1)
	s.setReady()
	s.log.Info("sink: started")

	// work outlives ctx by DrainTimeout, for the batch in hand.
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	drain := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(s.cfg.DrainTimeout, cancelWork)
		context.AfterFunc(work, func() { t.Stop() })
	})
	defer drain()

	// Report a revocation even while the topic is idle; writes check again
	// before every batch.
	var watch sync.WaitGroup
	watch.Go(func() { s.watchApproval(ctx) })
	defer watch.Wait()

	batches := make(chan []item, 1)
	go s.collect(ctx, batches)
	var err error
	for b := range batches {
		if err != nil {
			continue // drain the channel so collect can end
		}
		if ferr := s.flush(ctx, work, b); ferr != nil {
			err = ferr
			stop()
		}
	}
	failed := err != nil && !errors.Is(err, context.Canceled) && ctx.Err() == nil
	stop()
	watch.Wait()
	s.setNotReady(fmt.Errorf("%w: stopped", ErrNotReady))
	if failed {
		return err
	}
	if err != nil {
		s.log.Warn("sink: stopped with a batch uncommitted; it will be read again", "err", err)
	} else {
		s.log.Info("sink: stopped")
	}
	return nil
}

// Close stops Run and waits for it to return (after the batch in hand, see
// Config.DrainTimeout) or for ctx to end. It closes neither the subscriber,
// the store nor the publisher: their owner does.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	running, stop, done := s.running, s.stop, s.done
	s.mu.Unlock()
	if !running {
		return nil
	}
	stop()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sink: close: %w", ctx.Err())
	}
}

// item is one fetched event and what decoding it gave.
type item struct {
	msg        router.Message
	doc        []byte    // the event as JSON
	eventID    string    // "" when missing
	userID     string    // "" when missing
	occurredAt time.Time // zero when missing
	decodeErr  error
}

// collect fetches and decodes batches and sends them on out until ctx ends;
// it then sends the partial batch in hand and closes out.
func (s *Sink) collect(ctx context.Context, out chan<- []item) {
	defer close(out)
	for ctx.Err() == nil {
		b := s.fetchBatch(ctx)
		if len(b) == 0 {
			continue
		}
		select {
		case out <- b:
		case <-ctx.Done():
			// Run still drains the channel: hand the batch over.
			out <- b
			return
		}
	}
}

// fetchBatch fetches up to BatchSize events, waiting at most BatchTimeout
// after the first, and decodes them. The result is a prefix of the fetch
// order, so it holds contiguous offsets per partition.
func (s *Sink) fetchBatch(ctx context.Context) []item {
	var b []item
	// bctx ends at shutdown or BatchTimeout after the first event.
	bctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	backoff := s.cfg.RetryBackoff
	for len(b) < s.cfg.BatchSize {
		m, err := s.sub.Fetch(bctx)
		if err != nil {
			if bctx.Err() != nil {
				break // batch timeout or shutdown
			}
			s.m.retries.WithLabelValues("fetch").Inc()
			s.log.Warn("sink: fetch failed; retrying", "err", err)
			if !sleep(bctx, backoff) {
				break
			}
			backoff = min(backoff*2, s.cfg.MaxBackoff)
			continue
		}
		if timer == nil {
			timer = time.AfterFunc(s.cfg.BatchTimeout, cancel)
		}
		b = append(b, item{msg: m})
	}
	for i := range b {
		if !s.decode(ctx, &b[i]) {
			return b[:i]
		}
	}
	return b
}

// decode decodes it, retrying while the schema registry is unavailable. It
// returns false if ctx ended first.
func (s *Sink) decode(ctx context.Context, it *item) bool {
	backoff := s.cfg.RetryBackoff
	jd, fast := s.dec.(jsonDecoder)
	for {
		var err error
		if fast {
			var doc []byte
			var keys schemas.EventKeys
			if doc, keys, err = jd.DecodeJSONFast(ctx, it.msg.Topic, it.msg.Value); err == nil {
				it.doc, it.eventID, it.userID, it.occurredAt = doc, keys.EventID, keys.UserID, keys.OccurredAt
				return true
			}
		} else {
			var native any
			var schema string
			if native, schema, err = s.dec.Decode(ctx, it.msg.Topic, it.msg.Value); err == nil {
				it.decodeErr = it.fill(native, schema)
				return true
			}
		}
		if !errors.Is(err, schemas.ErrRegistryUnavailable) {
			it.decodeErr = err
			return true
		}
		s.m.retries.WithLabelValues("decode").Inc()
		s.log.Warn("sink: schema registry unavailable; retrying", "err", err)
		if !sleep(ctx, backoff) {
			return false
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
}

// jsonDecoder is implemented by decoders that transcode the Avro body
// straight to JSON and read the key fields (schemas.Extractor), several
// times faster than rendering goavro's native form.
type jsonDecoder interface {
	DecodeJSONFast(ctx context.Context, topic string, value []byte) (doc []byte, keys schemas.EventKeys, err error)
}

// fill renders the decoded event as JSON and reads its key fields.
func (it *item) fill(native any, schema string) error {
	doc, err := schemas.RenderJSON(make([]byte, 0, 1024), schema, native)
	if err != nil {
		return err
	}
	it.doc = doc
	rec, _ := native.(map[string]any)
	it.eventID = stringField(rec["event_id"])
	it.userID = stringField(rec["user_id"])
	switch v := unwrap(rec["occurred_at"]).(type) {
	case time.Time:
		it.occurredAt = v.UTC()
	case int64:
		it.occurredAt = time.UnixMilli(v).UTC()
	}
	return nil
}

// unwrap returns the value of a union's native form.
func unwrap(v any) any {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		for _, x := range m {
			return x
		}
	}
	return v
}

func stringField(v any) string {
	s, _ := unwrap(v).(string)
	return s
}

// flush writes one batch, quarantines what the store must not hold, and
// commits. It retries failures until ctx ends, and waits (not ready) while
// the approval is missing, until ctx or run ends.
func (s *Sink) flush(run, ctx context.Context, b []item) error {
	start := time.Now()
	var (
		write []Record
		quar  []router.Message
		rs    *rules.Ruleset
		err   error
	)
	backoff := s.cfg.RetryBackoff
	for {
		// (3) the ruleset in force at write time must still approve us.
		if rs, err = s.waitApproved(run, ctx); err != nil {
			return err
		}
		// (2) every event's region must be one the store is approved for.
		write, quar = s.classify(b, rs)
		if len(write) == 0 {
			break
		}
		wctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		err = s.store.Write(wctx, write)
		timedOut := wctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
		cancel()
		if err == nil {
			s.storeErr.Store(nil)
			break
		}
		if ctx.Err() != nil {
			return fmt.Errorf("sink: write: %w", err)
		}
		if timedOut {
			// Retried like any failure, approval checked again first.
			err = fmt.Errorf("write timed out after %s (write_timeout): %w", s.cfg.WriteTimeout, err)
		}
		storeErr := err // a variable of its own: err is assigned again below
		s.storeErr.Store(&storeErr)
		s.m.ready.Set(0)
		s.m.retries.WithLabelValues("write").Inc()
		s.log.Warn("sink: store write failed; retrying", "err", err, "events", len(write))
		if !sleep(ctx, backoff) {
			return fmt.Errorf("sink: write: %w", err)
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
	for i := range write {
		s.m.written.WithLabelValues(write[i].Region).Inc()
	}
	if len(quar) > 0 {
		if err := s.retry(ctx, "quarantine", func(ctx context.Context) error {
			return s.quarantine.Publish(ctx, quar...)
		}); err != nil {
			return err
		}
		for i := range quar {
			r, _ := router.HeaderValue(quar[i].Headers, router.HeaderReason)
			s.m.quarantined.WithLabelValues(string(r)).Inc()
		}
	}
	if err := s.retry(ctx, "commit", func(ctx context.Context) error {
		return s.sub.Commit(ctx, lastPerPartition(b)...)
	}); err != nil {
		return err
	}
	s.m.batchEvents.Observe(float64(len(b)))
	s.m.batchSeconds.Observe(time.Since(start).Seconds())
	if s.notReady.Load() == nil {
		s.m.ready.Set(1)
	}
	return nil
}

// watchApproval checks the approval every RulesPoll until ctx ends, so
// that readiness follows the ruleset even when no batch is written.
func (s *Sink) watchApproval(ctx context.Context) {
	t := time.NewTicker(s.cfg.RulesPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.observeApproval()
		}
	}
}

// observeApproval checks the approval once and updates readiness, logs and
// gauges on changes. It returns the ruleset when approved.
func (s *Sink) observeApproval() (*rules.Ruleset, error) {
	s.approvalMu.Lock()
	defer s.approvalMu.Unlock()
	rs, err := s.Check()
	if err == nil {
		if s.revoked.Swap(false) {
			s.log.Info("sink: approval confirmed again; writing resumes", "ruleset_version", rs.VersionString())
			s.m.approved.Set(1)
			s.setReady()
		}
		return rs, nil
	}
	if !s.revoked.Swap(true) {
		s.log.Error("sink: writing stopped (fail closed)", "err", err)
		s.m.approved.Set(0)
	}
	s.setNotReady(err)
	return nil, err
}

// waitApproved returns the ruleset in force once it approves the sink,
// reporting not-ready while it does not. It fails when the approval is
// missing and ctx or run has ended.
func (s *Sink) waitApproved(run, ctx context.Context) (*rules.Ruleset, error) {
	for {
		rs, err := s.observeApproval()
		if err == nil {
			return rs, nil
		}
		if run.Err() != nil || !sleep(ctx, s.cfg.RulesPoll) {
			return nil, err
		}
	}
}

// retry runs op until it succeeds or ctx ends.
func (s *Sink) retry(ctx context.Context, name string, op func(context.Context) error) error {
	backoff := s.cfg.RetryBackoff
	for {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("sink: %s: %w", name, err)
		}
		s.m.retries.WithLabelValues(name).Inc()
		s.log.Warn("sink: "+name+" failed; retrying", "err", err)
		if !sleep(ctx, backoff) {
			return fmt.Errorf("sink: %s: %w", name, err)
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
}

// classify splits a batch into the records the store may hold under rs
// (first occurrence of each event id only) and the events to quarantine.
func (s *Sink) classify(b []item, rs *rules.Ruleset) ([]Record, []router.Message) {
	write := make([]Record, 0, len(b))
	var quar []router.Message
	seen := make(map[string]struct{}, len(b))
	for i := range b {
		it := &b[i]
		region, ok := router.HeaderValue(it.msg.Headers, router.HeaderRegion)
		var reason string
		var rec Record
		switch {
		case !ok || len(region) == 0:
			reason = ReasonNoRegion
		case !rs.Approves(s.cfg.Store, string(region)):
			reason = ReasonRegionNotApproved
		default:
			// The region header is the region the event's jurisdiction
			// mapped to under the ruleset that placed it (whether a country
			// or a pin chose the jurisdiction). Under the ruleset in force
			// the jurisdiction must still map to it: otherwise the event
			// waits in the pinned topic of a region it no longer belongs to.
			reason = regionMismatch(it.msg.Headers, string(region), rs)
		}
		switch {
		case reason != "":
		case it.decodeErr != nil:
			reason = ReasonUndecodable
		default:
			var good bool
			rec, good = s.record(it, string(region))
			if !good {
				reason = ReasonMissingField
			}
		}
		if reason != "" {
			quar = append(quar, s.quarantined(&it.msg, reason))
			continue
		}
		if _, dup := seen[rec.EventID]; dup {
			continue
		}
		seen[rec.EventID] = struct{}{}
		write = append(write, rec)
	}
	return write, quar
}

// regionMismatch returns "" when the event's residency-jurisdiction header
// names a jurisdiction that maps to region under rs, ReasonNoJurisdiction
// when the header is missing or names no jurisdiction of rs, and
// ReasonRegionMoved when the jurisdiction now maps to another region.
func regionMismatch(hs []router.Header, region string, rs *rules.Ruleset) string {
	jur, ok := router.HeaderValue(hs, router.HeaderJurisdiction)
	if !ok || len(jur) == 0 {
		return ReasonNoJurisdiction
	}
	j, ok := rs.Jurisdiction(string(jur))
	if !ok {
		return ReasonNoJurisdiction
	}
	if g := j.RegionRef(); g == nil || g.Name != region {
		return ReasonRegionMoved
	}
	return ""
}

// record builds the Record of a decoded event; ok is false when event_id or
// occurred_at is missing.
func (s *Sink) record(it *item, region string) (Record, bool) {
	if it.eventID == "" || it.occurredAt.IsZero() {
		return Record{}, false
	}
	m := &it.msg
	r := Record{
		EventID:         it.eventID,
		UserID:          it.userID,
		Region:          region,
		OccurredAt:      it.occurredAt,
		Topic:           m.Topic,
		Partition:       m.Partition,
		Offset:          m.Offset,
		Time:            m.Time.UTC(),
		Event:           it.doc,
		Raw:             m.Value,
		SourcePartition: -1,
		SourceOffset:    -1,
	}
	for _, h := range m.Headers {
		switch h.Key {
		case router.HeaderJurisdiction:
			r.Jurisdiction = string(h.Value)
		case router.HeaderRulesetVersion:
			r.RulesetVersion = string(h.Value)
		case router.HeaderSourceTopic:
			r.SourceTopic = string(h.Value)
		case router.HeaderSourcePartition:
			if n, err := strconv.ParseInt(string(h.Value), 10, 32); err == nil {
				r.SourcePartition = int32(n)
			}
		case router.HeaderSourceOffset:
			if n, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				r.SourceOffset = n
			}
		}
	}
	return r, true
}

// quarantined returns the quarantine copy of m: key, value and headers kept,
// the reason and the refusing store added.
func (s *Sink) quarantined(m *router.Message, reason string) router.Message {
	hs := make([]router.Header, 0, len(m.Headers)+2)
	for _, h := range m.Headers {
		if h.Key != router.HeaderReason && h.Key != HeaderStore {
			hs = append(hs, h)
		}
	}
	hs = append(hs,
		router.Header{Key: router.HeaderReason, Value: []byte(reason)},
		router.Header{Key: HeaderStore, Value: []byte(s.cfg.Store)},
	)
	return router.Message{Topic: s.cfg.QuarantineTopic, Key: m.Key, Value: m.Value, Headers: hs, Time: m.Time}
}

// lastPerPartition returns the last message of each partition of b.
func lastPerPartition(b []item) []router.Message {
	type tp struct {
		topic string
		part  int
	}
	last := map[tp]int{}
	for i := range b {
		last[tp{b[i].msg.Topic, b[i].msg.Partition}] = i
	}
	out := make([]router.Message, 0, len(last))
	for _, i := range last {
		m := b[i].msg
		out = append(out, router.Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset})
	}
	return out
}

// sleep waits d or until ctx ends; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
