package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Sink drains one pinned topic into one store. Create it with New, run it
// with Run, stop it by ending Run's context or with Close.
type Sink struct {
	cfg        Config
	sub        stream.Subscriber
	store      Store
	quarantine stream.Publisher
	rules      RulesSource
	dec        Decoder
	log        *slog.Logger
	m          *metrics
	retry      stream.Retry // fetch, decode, rules, pins, write, quarantine, commit: never gives up

	notReady atomic.Pointer[error] // nil when ready
	revoked  atomic.Bool           // approval missing: writing stopped

	approvalMu sync.Mutex            // serialises observeApproval
	storeErr   atomic.Pointer[error] // last store failure, nil after a success
	ledgerErr  atomic.Pointer[error] // last audit ledger failure, nil after a success

	stateMu     sync.Mutex // serialises publishReadiness
	stateLogged bool       // a state has been logged
	lastState   string     // the state last logged ("" for ready)

	mu      sync.Mutex
	running bool
	stop    context.CancelFunc
	done    chan struct{}
}

// New returns a sink reading the pinned topic from sub, writing to store,
// quarantining through quarantine (a publisher to the cluster holding
// cfg.QuarantineTopic), checking approval against rs and decoding with dec.
// It does not touch any of them.
func New(cfg Config, sub stream.Subscriber, store Store, quarantine stream.Publisher, rs RulesSource, dec Decoder) (*Sink, error) {
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
	s.retry = stream.Retry{Min: cfg.RetryBackoff, Max: cfg.MaxBackoff, Component: "sink", Logger: s.log,
		OnRetry: func(op string) { s.m.retries.WithLabelValues(op).Inc() }}
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
//
// Its answer is the one readiness state: residency_sink_ready and the log
// ("sink ready" / "sink not ready", once per change) derive from it, here
// and on every approval check.
func (s *Sink) Ready() error {
	err := s.readiness()
	s.publishReadiness(err)
	return err
}

// readiness computes the state from every source.
func (s *Sink) readiness() error {
	if e := s.notReady.Load(); e != nil {
		return stateError(*e)
	}
	if e := s.storeErr.Load(); e != nil {
		return stateError(fmt.Errorf("%w: store: %w", ErrNotReady, *e))
	}
	if e := s.ledgerErr.Load(); e != nil {
		return *e
	}
	if gm, ok := s.sub.(stream.GroupMember); ok && !gm.Joined() {
		return stateError(fmt.Errorf("%w: not a member of the consumer group", ErrNotReady))
	}
	return nil
}

// publishReadiness sets the metric from err and logs the state when it
// changed.
func (s *Sink) publishReadiness(err error) {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	text := ""
	if err != nil {
		text = err.Error()
		s.m.ready.Set(0)
	} else {
		s.m.ready.Set(1)
	}
	if s.stateLogged && text == s.lastState {
		return
	}
	s.stateLogged, s.lastState = true, text
	if text == "" {
		s.log.Info("sink ready")
	} else {
		s.log.Warn("sink not ready", "state", text)
	}
}

// notReadyError is Ready's error: its text is the state alone (the ops
// handler prefixes "not ready: "); it matches ErrNotReady and what it wraps.
type notReadyError struct {
	why string
	err error
}

func (e *notReadyError) Error() string        { return e.why }
func (e *notReadyError) Unwrap() error        { return e.err }
func (e *notReadyError) Is(target error) bool { return target == ErrNotReady }

func stateError(err error) error {
	return &notReadyError{why: strings.TrimPrefix(err.Error(), ErrNotReady.Error()+": "), err: err}
}

func (s *Sink) setNotReady(err error) {
	s.notReady.Store(&err)
	s.publishReadiness(s.readiness())
}

func (s *Sink) setReady() {
	s.notReady.Store(nil)
	s.publishReadiness(s.readiness())
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

// item is one fetched event and what preparing it gave.
type item struct {
	msg         stream.Message
	doc         []byte            // the event as JSON
	eventID     string            // "" when missing
	userID      string            // "" when missing
	occurredAt  time.Time         // zero when missing
	fields      schemas.Fields    // country and user id, for the content check
	placedBy    *rules.Ruleset    // the ruleset version its header names
	pin         string            // its user's pin now ("" for none)
	reason      string            // a refusal found while preparing, "" for none
	finalReason string            // why classify refused it, for the ledger
	err         error             // why, for the residency-error header
	erased      bool              // an erasure covers it: neither written nor quarantined
	sums        router.RecordSums // its value and key digests, when the attestation check computed them
}

// refuse records that it must be quarantined for reason, because of err.
func (it *item) refuse(reason string, err error) {
	it.reason, it.err = reason, err
}

// collect fetches and prepares batches and sends them on out until ctx
// ends; it then sends the partial batch in hand and closes out.
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
// after the first, and prepares them. The result is a prefix of the fetch
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
	for len(b) < s.cfg.BatchSize {
		var m stream.Message
		if err := s.retry.Do(bctx, "fetch", func(ctx context.Context) error {
			var err error
			m, err = s.sub.Fetch(ctx)
			return err
		}); err != nil {
			break // batch timeout or shutdown
		}
		if timer == nil {
			timer = time.AfterFunc(s.cfg.BatchTimeout, cancel)
		}
		b = append(b, item{msg: m})
	}
	return s.prepare(ctx, b)
}

// prepare decodes the events of b, finds the ruleset versions they name and
// looks up their users' pins, retrying transient failures (a registry or
// rules store out of reach, a failed pin lookup). If ctx ends first it
// returns the prefix of b that is prepared, possibly none: the rest is not
// committed, so it is fetched again.
func (s *Sink) prepare(ctx context.Context, b []item) []item {
	for i := range b {
		s.checkAttestation(&b[i])
		if !s.decode(ctx, &b[i]) {
			b = b[:i]
			break
		}
	}
	if !s.resolveRulesets(ctx, b) || !s.lookupPins(ctx, b) {
		return nil
	}
	return b
}

// Errors of refusals found while preparing.
var (
	errNoSchemaHeader  = errors.New("no residency-schema header: how the event was written is not known")
	errMissingField    = errors.New("the event has no event_id or no occurred_at")
	errNoRulesetHeader = errors.New("no residency-ruleset-version header")
)

// decode reads it the way its residency-schema header says, retrying while
// the schema registry is unavailable. It returns false if ctx ended first.
func (s *Sink) decode(ctx context.Context, it *item) bool {
	if it.reason != "" {
		return true // refused already (its attestation): nothing of it is believed
	}
	h, ok := router.HeaderValue(it.msg.Headers, router.HeaderSchema)
	if !ok || len(h) == 0 {
		it.refuse(ReasonNoSchemaHeader, errNoSchemaHeader)
		return true
	}
	ref, err := schemas.ParseWriterRef(string(h))
	if err != nil {
		it.refuse(ReasonNoSchemaHeader, err)
		return true
	}
	if s.retry.Do(ctx, "decode", func(ctx context.Context) error {
		err = s.read(ctx, it, ref)
		if errors.Is(err, schemas.ErrRegistryUnavailable) {
			return err
		}
		return nil
	}) != nil {
		return false // ctx ended while the registry was away
	}
	switch {
	case err == nil:
		if it.eventID == "" || it.occurredAt.IsZero() {
			it.refuse(ReasonMissingField, errMissingField)
		}
	case errors.Is(err, schemas.ErrUnknownSchema):
		it.refuse(ReasonUnknownSchema, err)
	default:
		it.refuse(ReasonUndecodable, err)
	}
	return true
}

// read decodes it's value, written as ref says, and reads its key fields
// and the fields its placement is decided on.
func (s *Sink) read(ctx context.Context, it *item, ref schemas.WriterRef) error {
	if jd, ok := s.dec.(jsonDecoder); ok {
		doc, keys, err := jd.DecodeJSONFastRef(ctx, ref, it.msg.Value)
		if err != nil {
			return err
		}
		it.doc, it.eventID, it.userID, it.occurredAt = doc, keys.EventID, keys.UserID, keys.OccurredAt
	} else {
		native, schema, err := s.dec.DecodeRef(ctx, ref, it.msg.Value)
		if err != nil {
			return err
		}
		if err := it.fill(native, schema); err != nil {
			return err
		}
	}
	f, err := s.dec.ExtractRef(ctx, ref, it.msg.Value)
	if err != nil {
		return err
	}
	it.fields = f
	return nil
}

// jsonDecoder is implemented by decoders that transcode the Avro body
// straight to JSON and read the key fields (schemas.Extractor), several
// times faster than rendering goavro's native form.
type jsonDecoder interface {
	DecodeJSONFastRef(ctx context.Context, ref schemas.WriterRef, value []byte) (doc []byte, keys schemas.EventKeys, err error)
}

// resolveRulesets finds, for every event of b not yet refused, the ruleset
// version its residency-ruleset-version header names, with the content its
// residency-ruleset-digest header names (when it has one: events written
// by routers before the digest existed have none, and are known by their
// version number alone): the ruleset in force if it is that one, otherwise
// from Config.Rulesets (once per version, digest and batch), retrying while
// the rules store is unavailable. Events naming no version, one that
// cannot be loaded, or a version whose content has another digest now,
// are refused. It returns false if ctx ended first.
func (s *Sink) resolveRulesets(ctx context.Context, b []item) bool {
	cur, _ := s.rules.Current()
	known := map[[2]string]resolved{}
	for i := range b {
		it := &b[i]
		if it.reason != "" {
			continue
		}
		h, ok := router.HeaderValue(it.msg.Headers, router.HeaderRulesetVersion)
		if !ok {
			it.refuse(ReasonUnknownRuleset, errNoRulesetHeader)
			continue
		}
		d, _ := router.HeaderValue(it.msg.Headers, router.HeaderRulesetDigest)
		key := [2]string{string(h), string(d)}
		r, ok := known[key]
		if !ok {
			var done bool
			if r, done = s.rulesetVersion(ctx, cur, h, d); !done {
				return false
			}
			known[key] = r
		}
		if r.err != nil {
			it.refuse(ReasonUnknownRuleset, r.err)
			continue
		}
		it.placedBy = r.rs
	}
	return true
}

// resolved is the ruleset of one version named by events, or why it is
// not known.
type resolved struct {
	rs  *rules.Ruleset
	err error // refuses the events naming the version
}

// rulesetVersion returns the ruleset of the version header h names, with
// the digest header d names (nil: any), or the error that refuses the
// events naming it. done is false if ctx ended before the rules store
// answered.
func (s *Sink) rulesetVersion(ctx context.Context, cur *rules.Ruleset, h, d []byte) (r resolved, done bool) {
	v, err := strconv.ParseInt(string(h), 10, 64)
	if err != nil || v < 0 || strconv.FormatInt(v, 10) != string(h) {
		return resolved{err: fmt.Errorf("residency-ruleset-version %s is not a version number", short(h))}, true
	}
	digest := string(d)
	if d != nil && !hexDigest(digest) {
		return resolved{err: fmt.Errorf("residency-ruleset-digest %s is not a ruleset digest", short(d))}, true
	}
	if cur != nil && cur.Version() == v && (d == nil || cur.HasDigest(digest)) {
		return resolved{rs: cur}, true
	}
	if s.cfg.Rulesets == nil {
		inForce := "none"
		if cur != nil {
			inForce = cur.VersionString() + " (digest " + cur.ShortDigest() + ")"
		}
		what := strconv.FormatInt(v, 10)
		if d != nil {
			what += " (digest " + digest + ")"
		}
		return resolved{err: fmt.Errorf("ruleset version %s is not the ruleset in force (version %s), the only one this sink knows", what, inForce)}, true
	}
	var rs *rules.Ruleset
	if s.retry.Do(ctx, "rules", func(ctx context.Context) error {
		rs, err = s.cfg.Rulesets.Ruleset(ctx, v, digest)
		if errors.Is(err, rules.ErrUnavailable) {
			return err
		}
		return nil
	}) != nil {
		return resolved{}, false // ctx ended while the rules store was away
	}
	if err != nil {
		return resolved{err: err}, true
	}
	return resolved{rs: rs}, true
}

// hexDigest reports whether d looks like a ruleset digest: a short or full
// one, in lower-case hex.
func hexDigest(d string) bool {
	if len(d) != rules.ShortDigestLen && len(d) != 64 {
		return false
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// lookupPins finds the pins of the users of the events of b not yet
// refused, in one view of the pin set, waiting (retried) while there is no
// valid view. It returns false if ctx ended first.
func (s *Sink) lookupPins(ctx context.Context, b []item) bool {
	if s.cfg.Pins == nil {
		return true
	}
	var view router.PinView
	if err := s.retry.Do(ctx, "pins", func(context.Context) error {
		var err error
		view, err = s.cfg.Pins.Pins()
		return err
	}); err != nil {
		return false
	}
	for i := range b {
		if b[i].reason == "" && len(b[i].fields.UserID) > 0 {
			b[i].pin = view.Pin(b[i].fields.UserID)
		}
	}
	return true
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
		write            []Record
		quar             []stream.Message
		written, refused []int
		inForce          *rules.Ruleset
	)
	if err := s.retry.Do(ctx, "write", func(ctx context.Context) error {
		// (3) the ruleset in force at write time must still approve us.
		rs, err := s.waitApproved(run, ctx)
		if err != nil {
			return stream.Permanent(err)
		}
		// No erased user's event is stored: asked right before the write.
		if err := s.checkErasures(ctx, b); err != nil {
			return err
		}
		// (2) every event's region must be one the store is approved for.
		inForce = rs
		write, quar, written, refused = s.classify(b, rs)
		if len(write) == 0 {
			return nil
		}
		wctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
		err = s.store.Write(wctx, write)
		timedOut := wctx.Err() == context.DeadlineExceeded && ctx.Err() == nil
		cancel()
		if err == nil {
			if s.storeErr.Swap(nil) != nil {
				s.publishReadiness(s.readiness())
			}
			return nil
		}
		if timedOut {
			// Retried like any failure, approval checked again first.
			err = fmt.Errorf("write timed out after %s (write_timeout): %w", s.cfg.WriteTimeout, err)
		}
		s.storeErr.Store(&err)
		s.publishReadiness(s.readiness())
		return fmt.Errorf("%d events: %w", len(write), err)
	}); err != nil {
		return err
	}
	for i := range write {
		s.m.written.WithLabelValues(write[i].Region).Inc()
	}
	s.countErased(b)
	var qparts []int32
	var qoffs []int64
	if len(quar) > 0 {
		if err := s.retry.Do(ctx, "quarantine", func(ctx context.Context) error {
			var err error
			qparts, qoffs, err = s.publishQuarantine(ctx, quar)
			return err
		}); err != nil {
			return err
		}
		s.countQuarantined(quar)
	}
	// The audit leaves are durable before the offsets are committed.
	if err := s.recordLedger(ctx, b, written, refused, inForce, qparts, qoffs); err != nil {
		return err
	}
	if err := s.retry.Do(ctx, "commit", func(ctx context.Context) error {
		return s.sub.Commit(ctx, lastPerPartition(b)...)
	}); err != nil {
		return err
	}
	s.m.batchEvents.Observe(float64(len(b)))
	s.m.batchSeconds.Observe(time.Since(start).Seconds())
	s.publishReadiness(s.readiness())
	return nil
}

// countQuarantined counts the events of quar by reason and logs, per
// reason, how many there were and the error of the first (never payload).
func (s *Sink) countQuarantined(quar []stream.Message) {
	type seen struct {
		n     int
		first string
	}
	byReason := map[string]*seen{}
	var order []string
	for i := range quar {
		r, _ := router.HeaderValue(quar[i].Headers, router.HeaderReason)
		s.m.quarantined.WithLabelValues(string(r)).Inc()
		c := byReason[string(r)]
		if c == nil {
			e, _ := router.HeaderValue(quar[i].Headers, router.HeaderError)
			c = &seen{first: string(e)}
			byReason[string(r)] = c
			order = append(order, string(r))
		}
		c.n++
	}
	for _, r := range order {
		s.log.Warn("sink: events quarantined", "reason", r, "events", byReason[r].n, "first_error", byReason[r].first)
	}
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
			// The group membership and the store change without a call
			// here: the metric and the log follow them on every tick.
			s.publishReadiness(s.readiness())
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
		if run.Err() != nil || !stream.Sleep(ctx, s.cfg.RulesPoll) {
			return nil, err
		}
	}
}

// classify splits a batch into the records the store may hold under rs
// (first occurrence of each event id only) and the events to quarantine;
// events an erasure covers are in neither. written and refused are the
// indexes in b of the records of write and quar, in the same order.
func (s *Sink) classify(b []item, rs *rules.Ruleset) (write []Record, quar []stream.Message, written, refused []int) {
	write = make([]Record, 0, len(b))
	seen := make(map[string]struct{}, len(b))
	for i := range b {
		it := &b[i]
		it.finalReason = ""
		if it.erased {
			continue
		}
		reason, err := s.check(it, rs)
		if reason != "" {
			it.finalReason = reason
			quar = append(quar, s.quarantined(&it.msg, reason, err))
			refused = append(refused, i)
			continue
		}
		if _, dup := seen[it.eventID]; dup {
			continue
		}
		seen[it.eventID] = struct{}{}
		write = append(write, s.record(it))
		written = append(written, i)
	}
	return write, quar, written, refused
}

// check returns "" when the store may hold it under rs, the ruleset in
// force, and otherwise the reason and the error that refuse it. The checks,
// in order: the residency headers are there; the event was read the way
// its residency-schema header says, has its key fields and names a ruleset
// version the sink knows (see prepare); its content gives, under that
// version, the placement its headers claim (CheckContent); the store is
// approved for its region under rs; and under rs, with its user's pin now,
// it still belongs to that region.
func (s *Sink) check(it *item, rs *rules.Ruleset) (reason string, err error) {
	if it.reason == ReasonBadAttestation {
		return it.reason, it.err // no header of it is believed
	}
	hs := it.msg.Headers
	region, _ := router.HeaderValue(hs, router.HeaderRegion)
	if len(region) == 0 {
		return ReasonNoRegion, errors.New("no residency-region header")
	}
	if jur, _ := router.HeaderValue(hs, router.HeaderJurisdiction); len(jur) == 0 {
		return ReasonNoJurisdiction, errors.New("no residency-jurisdiction header")
	}
	if it.reason != "" {
		return it.reason, it.err
	}
	if _, err := CheckContent(hs, it.fields, it.pin, it.placedBy); err != nil {
		return ReasonContentMismatch, err
	}
	if !rs.Approves(s.cfg.Store, string(region)) {
		return ReasonRegionNotApproved, fmt.Errorf("ruleset version %s does not approve store %q for region %s", rs.VersionString(), s.cfg.Store, short(region))
	}
	// The event was placed right under the version that placed it. Under
	// the ruleset in force, and with its user's pin now, it must still
	// belong to that region: otherwise it waits in the pinned topic of a
	// region it no longer belongs to (its jurisdiction or country moved, or
	// its user was pinned or unpinned).
	switch d := router.Decide(it.fields, it.pin, rs); {
	case d.Outcome != router.Routed:
		return ReasonRegionMoved, fmt.Errorf("under the ruleset in force (version %s) the event is routed nowhere (%s), not to region %s", rs.VersionString(), d.Reason, short(region))
	case d.Region != string(region):
		return ReasonRegionMoved, fmt.Errorf("under the ruleset in force (version %s) the event belongs to jurisdiction %q, region %q, not region %s", rs.VersionString(), d.Jurisdiction, d.Region, short(region))
	}
	return "", nil
}

// record builds the Record of an event check accepted.
func (s *Sink) record(it *item) Record {
	m := &it.msg
	r := Record{
		EventID:         it.eventID,
		UserID:          it.userID,
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
		case router.HeaderRegion:
			r.Region = string(h.Value)
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
	return r
}

// maxErrorHeader bounds the residency-error header of a quarantined event.
const maxErrorHeader = 200

// quarantined returns the quarantine copy of m: key, value and headers kept,
// the reason, what exactly was wrong (err, cut to maxErrorHeader bytes) and
// the refusing store added.
func (s *Sink) quarantined(m *stream.Message, reason string, err error) stream.Message {
	hs := make([]stream.Header, 0, len(m.Headers)+3)
	for _, h := range m.Headers {
		if h.Key != router.HeaderReason && h.Key != router.HeaderError && h.Key != HeaderStore {
			hs = append(hs, h)
		}
	}
	msg := reason
	if err != nil {
		msg = err.Error()
	}
	if len(msg) > maxErrorHeader {
		msg = msg[:maxErrorHeader]
	}
	hs = append(hs,
		stream.Header{Key: router.HeaderReason, Value: []byte(reason)},
		stream.Header{Key: router.HeaderError, Value: []byte(msg)},
		stream.Header{Key: HeaderStore, Value: []byte(s.cfg.Store)},
	)
	return stream.Message{Topic: s.cfg.QuarantineTopic, Key: m.Key, Value: m.Value, Headers: hs, Time: m.Time}
}

// lastPerPartition returns the last message of each partition of b.
func lastPerPartition(b []item) []stream.Message {
	type tp struct {
		topic string
		part  int
	}
	last := map[tp]int{}
	for i := range b {
		last[tp{b[i].msg.Topic, b[i].msg.Partition}] = i
	}
	out := make([]stream.Message, 0, len(last))
	for _, i := range last {
		m := b[i].msg
		out = append(out, stream.Message{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset})
	}
	return out
}
