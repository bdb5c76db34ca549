package router

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Pipeline is the one routing pipeline: the router (Router.Run) and replay
// (router/replay) both run their events through it, so they read, decide,
// refuse and write exactly alike. For a batch of events it reads each
// event's fields (retrying while the schema registry is away), looks up the
// pins of their users in one call, decides (Decide, then Destinations: may
// this event be written there?), builds each outgoing record (key, value
// and producer headers unchanged, plus the residency headers), groups the
// records by destination cluster and publishes them, every cluster in
// parallel, each retried until acknowledged. Committing what was published
// is left to the caller, and so is where the events come from: the router
// commits its consumer group's offsets, replay checkpoints its ranges.
//
// Route is called by one goroutine at a time: it builds each batch's
// headers in memory it reuses from batch to batch (see headerBuilder). The
// Router's senders build their chunks' records concurrently, each in a
// header builder of its own (records, attestAll).
type Pipeline struct {
	cfg    PipelineConfig
	dest   Destinations
	log    *slog.Logger
	retry  stream.Retry
	warnMu sync.Mutex
	warned map[string]bool // clusters and topics already warned about
	hdr    headerBuilder   // builds the outgoing headers; released after a clean publish
}

// PipelineConfig configures a Pipeline. Publishers, IngestCluster,
// QuarantineTopic, DeadLetterTopic and Fields are required.
type PipelineConfig struct {
	// Publishers holds one publisher per Kafka cluster, by cluster name (the
	// names rulesets use in regions[].cluster). Required.
	Publishers map[string]stream.Publisher
	// IngestCluster is the cluster (a key of Publishers) holding the
	// quarantine and dead-letter topics. Required.
	IngestCluster string
	// QuarantineTopic receives events that could not be placed. Required.
	QuarantineTopic string
	// DeadLetterTopic receives events that could not be decoded. Required.
	DeadLetterTopic string
	// Reserved are the other topics of the ingest cluster no region may be
	// pinned to: the router's ingest topics (and, for replay, the topic it
	// reads). An event whose region is pinned to one of them, or to the
	// quarantine or dead-letter topic, is quarantined (no_rule): writing it
	// there would loop it back into the router or hide it among unplaced
	// ones. Default: none besides quarantine and dead-letter.
	Reserved []string
	// Fields reads the jurisdiction inputs of an event. Required.
	Fields FieldReader
	// Pins looks up per-user jurisdiction pins. Default nil: no pins.
	Pins PinLookup
	// Instance names the writer in the residency-router header. Default:
	// the host name.
	Instance string
	// MaxValueBytes is the largest event written, counting its key, value
	// and headers; a larger one is dead-lettered with reason too_large and
	// without its body (see HeaderOmittedBytes). Default
	// DefaultMaxValueBytes.
	MaxValueBytes int
	// Retry retries the schema registry, the pin lookup and every
	// publish. Default (when Retry.Max is 0): DefaultRetry, which gives up
	// after 2m with ErrGaveUp.
	Retry stream.Retry
	// Logger receives refusals of destinations, once each (never payloads
	// or user ids). Default slog.Default().
	Logger *slog.Logger
	// Attester, when set, attests every record written (the
	// HeaderAttestation header). Default nil: no attestation.
	Attester Attester
}

// DefaultRetry is the retry policy of the router and replay by default:
// 50ms doubling to 2s, give up after 2 minutes with ErrGaveUp.
var DefaultRetry = stream.Retry{Min: DefaultRetryMin, Max: DefaultRetryMax, GiveUp: DefaultGiveUp, GaveUp: ErrGaveUp, Component: "router"}

// NewPipeline checks cfg and fills in defaults.
func NewPipeline(cfg PipelineConfig) (*Pipeline, error) {
	var missing []string
	if len(cfg.Publishers) == 0 {
		missing = append(missing, "Publishers")
	}
	if cfg.IngestCluster == "" {
		missing = append(missing, "IngestCluster")
	}
	if cfg.QuarantineTopic == "" {
		missing = append(missing, "QuarantineTopic")
	}
	if cfg.DeadLetterTopic == "" {
		missing = append(missing, "DeadLetterTopic")
	}
	if cfg.Fields == nil {
		missing = append(missing, "Fields")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: missing %v", ErrConfig, missing)
	}
	if _, ok := cfg.Publishers[cfg.IngestCluster]; !ok {
		return nil, fmt.Errorf("%w: IngestCluster %q has no publisher", ErrConfig, cfg.IngestCluster)
	}
	clusters := make([]string, 0, len(cfg.Publishers))
	for name, p := range cfg.Publishers {
		if p == nil {
			return nil, fmt.Errorf("%w: publisher for cluster %q is nil", ErrConfig, name)
		}
		clusters = append(clusters, name)
	}
	if cfg.MaxValueBytes < 0 {
		return nil, fmt.Errorf("%w: negative MaxValueBytes", ErrConfig)
	}
	cfg.Instance = cmp.Or(cfg.Instance, hostname())
	cfg.MaxValueBytes = cmp.Or(cfg.MaxValueBytes, DefaultMaxValueBytes)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Retry.Max == 0 {
		cfg.Retry = DefaultRetry
	}
	if cfg.Retry.Logger == nil {
		cfg.Retry.Logger = cfg.Logger
	}
	p := &Pipeline{cfg: cfg, log: cfg.Logger, retry: cfg.Retry, warned: map[string]bool{},
		dest: Destinations{Clusters: clusters, IngestCluster: cfg.IngestCluster,
			Reserved: append([]string{cfg.QuarantineTopic, cfg.DeadLetterTopic}, cfg.Reserved...)}}
	p.dest.compile()
	return p, nil
}

// Destinations says where routed events may be written: the one answer to
// "may this event be written there?", which the router, replay and
// `residency explain` all ask. A pinned topic may be written only on a
// cluster there is a connection to, and on the ingest cluster only if it
// is not one of the reserved topics (ingest, quarantine, dead-letter).
type Destinations struct {
	// Clusters are the clusters there is a connection (a publisher) to.
	Clusters []string
	// IngestCluster is the cluster of the ingest, quarantine and
	// dead-letter topics.
	IngestCluster string
	// Reserved are the topics of the ingest cluster no region may be
	// pinned to: the ingest, quarantine and dead-letter topics.
	Reserved []string

	clusters, reserved map[string]bool
}

func (d *Destinations) compile() {
	d.clusters, d.reserved = map[string]bool{}, map[string]bool{}
	for _, c := range d.Clusters {
		d.clusters[c] = true
	}
	for _, t := range d.Reserved {
		d.reserved[t] = true
	}
}

// Allows returns nil when a routed event may be written to topic on
// cluster, and otherwise why not.
func (d *Destinations) Allows(cluster, topic string) error {
	if d.clusters == nil {
		d.compile()
	}
	if !d.clusters[cluster] {
		return fmt.Errorf("cluster %s is not in kafka.clusters: there is no connection to it", cluster)
	}
	if cluster == d.IngestCluster && d.reserved[topic] {
		return fmt.Errorf("%s is an ingest, quarantine or dead-letter topic of the ingest cluster", topic)
	}
	return nil
}

// Place decides one event as the pipeline does: Decide, then a Routed
// decision whose cluster and pinned topic Destinations refuses becomes
// Quarantined with ReasonNoRule (the refusal is logged once per cluster or
// topic).
func (p *Pipeline) Place(f schemas.Fields, pin string, rs *rules.Ruleset) Decision {
	d := Decide(f, pin, rs)
	if d.Outcome == Routed {
		if err := p.dest.Allows(d.Cluster, d.Topic); err != nil {
			p.warnOnce(d.Cluster+"/"+d.Topic, "ruleset pins a region where this router does not write; quarantining its events",
				"region", d.Region, "cluster", d.Cluster, "topic", d.Topic, "why", err.Error())
			return Decision{Outcome: Quarantined, Reason: ReasonNoRule, Jurisdiction: d.Jurisdiction, Pinned: d.Pinned}
		}
	}
	return d
}

// Allows returns nil when the pipeline may write a routed event to topic on
// cluster, and otherwise why not (see Destinations).
func (p *Pipeline) Allows(cluster, topic string) error { return p.dest.Allows(cluster, topic) }

// warnOnce logs msg at error level the first time key is seen.
func (p *Pipeline) warnOnce(key, msg string, args ...any) {
	p.warnMu.Lock()
	seen := p.warned[key]
	p.warned[key] = true
	p.warnMu.Unlock()
	if !seen {
		p.log.Error(msg, append(args, "reason", ReasonNoRule)...)
	}
}

// Destination returns the cluster and topic decision d sends an event to.
func (p *Pipeline) Destination(d *Decision) (cluster, topic string) {
	switch d.Outcome {
	case Routed:
		return d.Cluster, d.Topic
	case Quarantined:
		return p.cfg.IngestCluster, p.cfg.QuarantineTopic
	case DeadLettered:
		return p.cfg.IngestCluster, p.cfg.DeadLetterTopic
	}
	return p.cfg.IngestCluster, d.Topic
}

// Event is one event of a Batch.
type Event struct {
	// Msg is the event as read. Its Topic, Partition and Offset are written
	// as its source coordinates (residency-source-*) and its Topic picks
	// its framing; replay passes the coordinates the router first read it
	// from.
	Msg *stream.Message
	// Fields are its jurisdiction inputs (on a decode error too: Writer
	// says how far it was read).
	Fields schemas.Fields
	// Err is its decode error; the event is dead-lettered.
	Err error
	// Pin is the jurisdiction its user is pinned to ("" for none).
	Pin string
	// Decision is where it goes.
	Decision Decision
	// Skip leaves the event out of Publish (replay: filtered out, refused
	// by the loop guard, or staying where it is).
	Skip bool
	// Extra are headers written after its residency headers (replay's
	// provenance).
	Extra []stream.Header
	// Sums are the SHA-256 digests of Msg.Key and Msg.Value, when an
	// Attester computed them for the record's tag (Sums.Set): the Ledger
	// takes them from here instead of hashing the event again.
	Sums RecordSums
}

// RecordSums are the SHA-256 digests of an event's key and value.
type RecordSums struct {
	// Value is the digest of Msg.Value; Key that of Msg.Key (zero for a
	// null key).
	Value, Key [32]byte
	// Set says the digests were computed.
	Set bool
}

// Batch is a batch of events on its way through a Pipeline: Decide decides
// it, its owner may then skip events and add headers, and Publish writes
// it.
type Batch struct {
	// Events are the batch's events, in the order given.
	Events []Event
	// Ruleset is the ruleset the batch was decided under.
	Ruleset *rules.Ruleset

	msgs []stream.Message // the events as given to Decide

	// Set by Publish when a publisher says where it wrote (a
	// stream.PlacingPublisher): by event index, -1 otherwise.
	parts []int32
	offs  []int64
}

// Placement returns the partition and offset event i of b was written at
// by the last Publish of b, or -1, -1 when its publisher did not say
// (not a stream.PlacingPublisher), it was skipped or b was not published.
func (b *Batch) Placement(i int) (partition int32, offset int64) {
	if i < 0 || i >= len(b.offs) {
		return -1, -1
	}
	return b.parts[i], b.offs[i]
}

// Decide reads the fields of every event of msgs, looks up the pins of
// their users in one call and decides each under rs. It fails only when
// the schema registry or the pin lookup stays unavailable (an error
// wrapping the retry policy's GaveUp) or ctx ends; a decode error
// dead-letters its event.
func (p *Pipeline) Decide(ctx context.Context, msgs []stream.Message, rs *rules.Ruleset) (*Batch, error) {
	return p.decide(ctx, msgs, rs, nil)
}

// DecideView is Decide with the pins of view, one in-memory view of the
// pin set taken for the batch, instead of a lookup: no round trip and no
// retry for pins (the router's loop). view nil means no pins.
func (p *Pipeline) DecideView(ctx context.Context, msgs []stream.Message, rs *rules.Ruleset, view PinView) (*Batch, error) {
	if view == nil {
		view = noPins{}
	}
	return p.decide(ctx, msgs, rs, view)
}

// noPins is the PinView of no pins.
type noPins struct{}

func (noPins) Pin([]byte) string { return "" }

// decide is Decide, with the pins of view when it is not nil, else of a
// lookup.
func (p *Pipeline) decide(ctx context.Context, msgs []stream.Message, rs *rules.Ruleset, view PinView) (*Batch, error) {
	b := &Batch{Events: make([]Event, len(msgs)), Ruleset: rs, msgs: msgs}
	for i := range msgs {
		ev := &b.Events[i]
		ev.Msg = &msgs[i]
		f, err := p.extract(ctx, ev.Msg)
		ev.Fields = f // on error too: f.Writer says how far it was read
		if err != nil {
			if errors.Is(err, schemas.ErrRegistryUnavailable) {
				return nil, err // gave up or shutting down
			}
			ev.Err, ev.Decision = err, DeadLetter(err)
		}
	}
	if view != nil {
		for i := range b.Events {
			if ev := &b.Events[i]; ev.Err == nil && len(ev.Fields.UserID) > 0 {
				ev.Pin = view.Pin(ev.Fields.UserID)
			}
		}
	} else if err := p.lookupPins(ctx, b.Events); err != nil {
		return nil, err
	}
	for i := range b.Events {
		ev := &b.Events[i]
		if ev.Err == nil {
			ev.Decision = p.Place(ev.Fields, ev.Pin, rs)
		}
	}
	return b, nil
}

// extract reads an event's fields as the router does, retrying while the
// schema registry is unavailable: an empty value fails with
// schemas.ErrEmptyValue, an event whose key, value and headers add up to
// more than MaxValueBytes with schemas.ErrTooLarge, anything else is
// Fields.Extract's result. A returned error wrapping
// ErrRegistryUnavailable means the retry gave up or ctx ended; any other
// dead-letters the event.
func (p *Pipeline) extract(ctx context.Context, m *stream.Message) (schemas.Fields, error) {
	// The common case, one attempt, without the retry loop's closure and
	// clock reads. Empty and oversized events fail here, not transiently.
	if len(m.Value) == 0 {
		return schemas.Fields{}, fmt.Errorf("router: %w", schemas.ErrEmptyValue)
	}
	if n := recordBytes(m); n > p.cfg.MaxValueBytes {
		return schemas.Fields{}, fmt.Errorf("router: %w: %d bytes > %d", schemas.ErrTooLarge, n, p.cfg.MaxValueBytes)
	}
	f, decodeErr := p.cfg.Fields.Extract(ctx, m.Topic, m.Value)
	if decodeErr == nil || transientExtract(decodeErr) == nil {
		return f, decodeErr
	}
	// The schema registry is unavailable (or ctx ended): retry with backoff.
	// The first call of the closure reports the attempt just made.
	retried := false
	err := p.retry.Do(ctx, "schema_registry", func(ctx context.Context) error {
		if retried {
			f, decodeErr = p.cfg.Fields.Extract(ctx, m.Topic, m.Value)
		}
		retried = true
		return transientExtract(decodeErr)
	})
	if err != nil {
		return schemas.Fields{}, err
	}
	return f, decodeErr
}

// transientExtract returns the error to retry for an extraction error: one
// wrapping schemas.ErrRegistryUnavailable when the registry is unavailable
// or ctx ended (never the event's fault, never dead-lettered), else nil.
func transientExtract(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, schemas.ErrRegistryUnavailable):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", schemas.ErrRegistryUnavailable, err)
	}
	return nil
}

// lookupPins sets the Pin of the decodable events with a user id, from one
// call to Pins, retried. A lookup returning another number of results than
// it was asked is a (retried) failure.
func (p *Pipeline) lookupPins(ctx context.Context, evs []Event) error {
	if p.cfg.Pins == nil {
		return nil
	}
	var ids [][]byte
	var idx []int
	for i := range evs {
		if evs[i].Err == nil && len(evs[i].Fields.UserID) > 0 {
			ids = append(ids, evs[i].Fields.UserID)
			idx = append(idx, i)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var got []string
	err := p.retry.Do(ctx, "pins", func(ctx context.Context) error {
		var err error
		got, err = p.cfg.Pins.Lookup(ctx, ids)
		if err == nil && len(got) != len(ids) {
			err = fmt.Errorf("pin lookup returned %d results for %d users", len(got), len(ids))
		}
		return err
	})
	if err != nil {
		return err
	}
	for k, i := range idx {
		evs[i].Pin = got[k]
	}
	return nil
}

// Publish writes the events of b not skipped to their destinations: each
// event's key, value and producer headers unchanged (producer residency-*
// headers dropped), its residency headers and its Extra headers, the
// records of each cluster in batch order, every cluster in parallel, each
// retried until acknowledged. It returns nil once every record is
// acknowledged; an error when a cluster stays unavailable (wrapping the
// retry policy's GaveUp) or ctx ends, in which case any subset may have
// been written and nothing may be considered done.
func (p *Pipeline) Publish(ctx context.Context, b *Batch) error {
	// Group the outgoing records by cluster, keeping batch order: count the
	// records per cluster, then fill one backing slice.
	var groups []clusterGroup
	n := 0
	for i := range b.Events {
		if ev := &b.Events[i]; !ev.Skip {
			cluster, _ := p.Destination(&ev.Decision)
			groups = countFor(groups, cluster)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	backing := make([]stream.Message, n)
	events := make([]int32, n)
	for g := range groups {
		k := groups[g].n
		groups[g].msgs, backing = backing[:0:k], backing[k:]
		groups[g].events, events = events[:0:k], events[k:]
	}
	p.hdr.tags = p.cfg.Attester != nil
	p.hdr.startBatch(b.msgs, b.Ruleset.VersionString(), b.Ruleset.ShortDigest(), p.cfg.Instance)
	for i := range b.Events {
		ev := &b.Events[i]
		if ev.Skip {
			continue
		}
		cluster, _ := p.Destination(&ev.Decision)
		g := groupOf(groups, cluster)
		g.msgs = append(g.msgs, p.record(b, ev, &p.hdr, nil))
		g.events = append(g.events, int32(i))
	}
	b.parts, b.offs = nil, nil
	anyFailed, err := p.publishByCluster(ctx, b, groups)
	if err != nil {
		return err // the headers are not released: a publisher may still read them
	}
	if !anyFailed {
		// Every Publish given this batch returned nil, so no publisher
		// refers to its messages any more (the Publisher memory contract):
		// the next batch may build its headers in their memory. After a
		// failed attempt, even one a retry made good, it gets fresh memory.
		p.hdr.release()
	}
	return nil
}

// publishByCluster writes each group's records with its cluster's
// publisher, the clusters in parallel, each retried until it is
// acknowledged. The errors of all clusters that failed are joined.
// anyFailed reports whether any call to Publish returned an error,
// including calls that a retry made good: when it is false (and err is
// nil), every Publish given the messages returned nil, so no publisher
// refers to them any more and their memory may be reused.
func (p *Pipeline) publishByCluster(ctx context.Context, b *Batch, groups []clusterGroup) (anyFailed bool, err error) {
	sort.Slice(groups, func(i, j int) bool { return groups[i].cluster < groups[j].cluster })
	placing := false
	for i := range groups {
		_, ok := p.cfg.Publishers[groups[i].cluster].(stream.PlacingPublisher)
		placing = placing || ok
	}
	if placing {
		b.parts, b.offs = make([]int32, len(b.Events)), make([]int64, len(b.Events))
		for i := range b.offs {
			b.parts[i], b.offs[i] = -1, -1
		}
	}
	errs := make([]error, len(groups))
	var failed atomic.Bool
	var wg sync.WaitGroup
	for i := range groups {
		g := &groups[i]
		wg.Go(func() {
			pub := p.cfg.Publishers[g.cluster]
			pp, placing := pub.(stream.PlacingPublisher)
			var parts []int32
			var offs []int64
			if placing {
				parts, offs = make([]int32, len(g.msgs)), make([]int64, len(g.msgs))
			}
			errs[i] = p.retry.Do(ctx, "publish", func(ctx context.Context) error {
				var err error
				if placing {
					err = pp.PublishPlaced(ctx, parts, offs, g.msgs...)
				} else {
					err = pub.Publish(ctx, g.msgs...)
				}
				if err != nil {
					failed.Store(true)
					return fmt.Errorf("publish to cluster %s: %w", g.cluster, err)
				}
				return nil
			})
			if placing && errs[i] == nil {
				for k, ev := range g.events {
					b.parts[ev], b.offs[ev] = parts[k], offs[k]
				}
			}
		})
	}
	wg.Wait()
	return failed.Load(), errors.Join(errs...)
}

// clusterGroup is a batch's outgoing records for one cluster.
type clusterGroup struct {
	cluster string
	n       int              // how many records go to cluster
	msgs    []stream.Message // the records, in batch order
	events  []int32          // the index in the batch of each record's event
}

// countFor counts one more record for cluster. A batch names few clusters,
// so a slice searched in order beats a map.
func countFor(groups []clusterGroup, cluster string) []clusterGroup {
	if g := groupOf(groups, cluster); g != nil {
		g.n++
		return groups
	}
	return append(groups, clusterGroup{cluster: cluster, n: 1})
}

// groupOf returns the group of cluster, or nil.
func groupOf(groups []clusterGroup, cluster string) *clusterGroup {
	for i := range groups {
		if groups[i].cluster == cluster {
			return &groups[i]
		}
	}
	return nil
}

// recordBytes is the size of m as the size limits count it: key, value
// and every header's name and value.
func recordBytes(m *stream.Message) int {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// omitKeepBytes bounds the key and producer headers an oversized event's
// dead-letter record keeps for correlation (trace ids, event-id headers).
const omitKeepBytes = 16 << 10

// omitBody turns out, the outgoing dead-letter record of m, into one that
// does not carry m's value when m was too large to route (err wraps
// schemas.ErrTooLarge): writing it again would fail for the same reason and
// block the partition. The key and the producer's headers are kept when
// together they fit in 16 KiB, and dropped otherwise. The residency headers
// (reason, error, source topic/partition/offset) stay, plus
// HeaderOmittedBytes, so the event can be found in the ingest topic. Other
// records are unchanged.
func omitBody(out *stream.Message, m *stream.Message, err error) {
	if err == nil || !errors.Is(err, schemas.ErrTooLarge) {
		return
	}
	size := recordBytes(m)
	out.Value = nil
	hs := make([]stream.Header, 0, len(out.Headers)+1)
	if size-len(m.Value) <= omitKeepBytes {
		hs = append(hs, out.Headers...)
	} else {
		out.Key = nil
		for _, h := range out.Headers {
			if strings.HasPrefix(h.Key, HeaderPrefix) {
				hs = append(hs, h)
			}
		}
	}
	out.Headers = append(hs, stream.Header{Key: HeaderOmittedBytes, Value: strconv.AppendInt(nil, int64(size), 10)})
}

// records builds the outgoing records of the events idx of b into out
// (appended), their headers in hdr's memory (started for b), exactly as
// Publish builds them.
func (p *Pipeline) records(b *Batch, idx []int32, hdr *headerBuilder, tags [][]byte, out []stream.Message) []stream.Message {
	for k, i := range idx {
		var tag []byte
		if tags != nil {
			tag = tags[k]
		}
		out = append(out, p.record(b, &b.Events[i], hdr, tag))
	}
	return out
}

// attestAll makes the attestation tags of the events idx of b on up to
// workers goroutines (fanOut: one for a small chunk), in hdr's memory
// (started for b): tag k is event idx[k]'s, as record would make it.
func (p *Pipeline) attestAll(b *Batch, idx []int32, hdr *headerBuilder, workers int) [][]byte {
	region := hdr.tagRegions(len(idx))
	tags := hdr.tagSlots(len(idx))
	fanOut(len(idx), workers, minFanOut, func(lo, hi int) {
		for k := lo; k < hi; k++ {
			rec := p.attested(b, &b.Events[idx[k]])
			dst := region[k*tagRoom : k*tagRoom : (k+1)*tagRoom]
			tags[k] = frozen(p.cfg.Attester.AppendAttestation(dst, &rec))
		}
	})
	return tags
}

// attested returns the record an Attester is given for ev, an event of b.
func (p *Pipeline) attested(b *Batch, ev *Event) AttestedRecord {
	cluster, topic := p.Destination(&ev.Decision)
	key, value := writtenBody(ev.Msg, ev.Err)
	rec := AttestedRecord{Event: ev, Cluster: cluster, Topic: topic, Key: key, Value: value}
	if ev.Decision.Outcome != DeadLettered && b.Ruleset != nil {
		rec.RulesetVersion = b.Ruleset.Version()
	}
	return rec
}

// record builds the outgoing record of ev, an event of b, its headers in
// hdr's memory (started for b): the event's key, value and producer
// headers, its residency headers, its attestation when the pipeline has
// an Attester (tag, when attestAll made it; made here when nil), then its
// Extra headers.
func (p *Pipeline) record(b *Batch, ev *Event, hdr *headerBuilder, tag []byte) stream.Message {
	m := ev.Msg
	_, topic := p.Destination(&ev.Decision)
	if p.cfg.Attester != nil && tag == nil {
		rec := p.attested(b, ev)
		tag = hdr.tag(p.cfg.Attester, &rec)
	}
	hs := hdr.headers(m, &ev.Decision, ev.Fields.Writer, ev.Err, tag)
	msg := stream.Message{Topic: topic, Key: m.Key, Value: m.Value, Headers: hs, Time: m.Time}
	omitBody(&msg, m, ev.Err)
	if len(ev.Extra) > 0 {
		msg.Headers = append(slices.Clip(msg.Headers), ev.Extra...)
	}
	return msg
}

// writtenBody returns the key and value of m's outgoing record, as
// omitBody leaves them.
func writtenBody(m *stream.Message, err error) (key, value []byte) {
	if err == nil || !errors.Is(err, schemas.ErrTooLarge) {
		return m.Key, m.Value
	}
	if recordBytes(m)-len(m.Value) <= omitKeepBytes {
		return m.Key, nil
	}
	return nil, nil
}
