package differential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/stream"
)

// routerInstance is the residency-router header of the routers under test.
const routerInstance = "router-diff"

// pinMap is the pin map as a router.PinLookup (the pipeline) and a
// router.PinSource (the sink).
type pinMap map[string]string

// Pins returns the map itself as the view of every pin.
func (p pinMap) Pins() (router.PinView, error) { return p, nil }

// Pin returns the user's pin, or "".
func (p pinMap) Pin(userID []byte) string { return p[string(userID)] }

func (p pinMap) Lookup(_ context.Context, ids [][]byte) ([]string, error) {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = p[string(id)]
	}
	return out, nil
}

// legs are the readings of one deployment under comparison: the router's
// pipeline in memory, explain's and the sink's, each with an extractor of
// its own built from the deployment's schemas block, as each command
// builds one from the config.
type legs struct {
	d       *deployment
	pipe    *router.Pipeline     // the router's pipeline (in memory)
	pubs    map[string]*capture  // its publishers, by cluster
	explain *router.Pipeline     // the pipeline `residency explain` decides with
	sinkDec *schemas.Extractor   // the sink's decoder
	retry   stream.Retry         // the pipelines' retry policy
	pins    pinMap               // the pin map
	errs    func(string, ...any) // reports a disagreement
	ctx     context.Context      // bounds every call
	done    map[string]int       // the reference's decisions, by reason, for the summary
}

// newLegs builds the legs of d. errorf reports a disagreement.
func newLegs(ctx context.Context, d *deployment, errorf func(string, ...any)) (*legs, error) {
	l := &legs{d: d, pubs: map[string]*capture{}, pins: pinMap(d.pins), errs: errorf, ctx: ctx, done: map[string]int{},
		retry: stream.Retry{Min: time.Millisecond, Max: 10 * time.Millisecond, Attempts: 20, Component: "differential"}}
	fields, err := schemas.NewExtractor(d.xcfg)
	if err != nil {
		return nil, err
	}
	pubs := map[string]stream.Publisher{}
	for _, c := range d.clusters {
		l.pubs[c] = &capture{}
		pubs[c] = l.pubs[c]
	}
	discard := slog.New(slog.DiscardHandler)
	if l.pipe, err = router.NewPipeline(router.PipelineConfig{Publishers: pubs, IngestCluster: d.ingest,
		QuarantineTopic: d.quarantine, DeadLetterTopic: d.deadLetter, Reserved: d.ingestTopics(),
		Fields: fields, Pins: l.pins, Instance: routerInstance, MaxValueBytes: d.maxValueBytes, Retry: l.retry, Logger: discard}); err != nil {
		return nil, err
	}
	// explain, with --config: an extractor of its own from the schemas
	// block, a pipeline over the config's clusters and topics that never
	// publishes, one attempt at the registry and the pins.
	xfields, err := schemas.NewExtractor(d.xcfg)
	if err != nil {
		return nil, err
	}
	nopubs := map[string]stream.Publisher{}
	for _, c := range d.clusters {
		nopubs[c] = noPublisher{}
	}
	if l.explain, err = router.NewPipeline(router.PipelineConfig{Publishers: nopubs, IngestCluster: d.ingest,
		QuarantineTopic: d.quarantine, DeadLetterTopic: d.deadLetter, Reserved: d.ingestTopics(),
		Fields: xfields, Pins: l.pins, MaxValueBytes: d.maxValueBytes, Logger: discard,
		Retry: stream.Retry{Min: time.Millisecond, Max: time.Millisecond, Attempts: 1, Component: "explain"}}); err != nil {
		return nil, err
	}
	if l.sinkDec, err = schemas.NewExtractor(d.xcfg); err != nil {
		return nil, err
	}
	return l, nil
}

// capture is a publisher that keeps copies of what it is given.
type capture struct{ msgs []stream.Message }

func (c *capture) Publish(_ context.Context, msgs ...stream.Message) error {
	for _, m := range msgs {
		c.msgs = append(c.msgs, cloneMessage(m))
	}
	return nil
}

func (*capture) Close() error { return nil }

// cloneMessage copies m's key, value and headers, null kept apart from
// empty.
func cloneMessage(m stream.Message) stream.Message {
	m.Key, m.Value = slices.Clone(m.Key), slices.Clone(m.Value)
	if m.Headers != nil {
		hs := make([]stream.Header, len(m.Headers))
		for i, h := range m.Headers {
			hs[i] = stream.Header{Key: h.Key, Value: slices.Clone(h.Value)}
		}
		m.Headers = hs
	}
	return m
}

// noPublisher stands for a cluster explain's pipeline may write to.
type noPublisher struct{}

func (noPublisher) Publish(context.Context, ...stream.Message) error {
	return errors.New("explain does not publish")
}
func (noPublisher) Close() error { return nil }

// routeInMemory runs msgs through the router's pipeline as Router.Run
// does (Decide, then Publish) and returns each event's decision and the
// record written for it.
func (l *legs) routeInMemory(msgs []stream.Message) ([]router.Decision, []stream.Message, error) {
	b, err := l.pipe.Decide(l.ctx, msgs, l.d.rs)
	if err != nil {
		return nil, nil, err
	}
	if err := l.pipe.Publish(l.ctx, b); err != nil {
		return nil, nil, err
	}
	ds := make([]router.Decision, len(b.Events))
	outs := make([]stream.Message, len(b.Events))
	for i := range b.Events {
		ds[i] = b.Events[i].Decision
		cluster, _ := l.pipe.Destination(&b.Events[i].Decision)
		c := l.pubs[cluster]
		outs[i], c.msgs = c.msgs[0], c.msgs[1:]
	}
	return ds, outs, nil
}

// verdict is what the four readings must agree on.
type verdict struct {
	Outcome      router.Outcome
	Reason       string
	Jurisdiction string
	Region       string
	Pinned       bool
}

func (v verdict) String() string {
	s := v.Outcome.String()
	if v.Reason != "" {
		s += " " + v.Reason
	}
	if v.Jurisdiction != "" {
		s += " jurisdiction " + v.Jurisdiction
	}
	if v.Region != "" {
		s += " region " + v.Region
	}
	if v.Pinned {
		s += " (pin)"
	}
	return s
}

func verdictOf(d router.Decision) verdict {
	return verdict{d.Outcome, d.Reason, d.Jurisdiction, d.Region, d.Pinned}
}

// agrees reports whether a reading v of the router (or explain, or the
// sink) agrees with the reference reading ref.
func agrees(v verdict, ref *reading) bool {
	if v == verdictOf(ref.Decision) {
		return true
	}
	return ref.alt != "" && v == verdict{Outcome: router.DeadLettered, Reason: ref.alt}
}

// compare checks one event: in as produced, msg as the router read it
// (coordinates included), the router pipeline's decision routed (nil when
// only its output is known, on real Kafka) and the record out it wrote.
// Every disagreement is reported through l.errs.
func (l *legs) compare(what string, msg stream.Message, routed *router.Decision, out stream.Message) {
	d := l.d
	fail := func(format string, args ...any) {
		l.errs("%s (%s, key %s, %d headers, value %x): %s", d.name, what, showBytes(msg.Key), len(msg.Headers), cut(msg.Value), fmt.Sprintf(format, args...))
	}
	ref := d.reference(&msg)
	want := verdictOf(ref.Decision)
	l.done[reasonOf(ref.Decision)]++

	// 1. The router: its decision, and where and how it wrote the event.
	if routed != nil && !agrees(verdictOf(*routed), &ref) {
		fail("the router decides %v, the reference %v", verdictOf(*routed), want)
	}
	got, err := d.outputVerdict(&out)
	if err != nil {
		fail("the router's record: %v", err)
		return
	}
	if !agrees(got, &ref) {
		fail("the router wrote %v to %s, the reference says %v", got, out.Topic, want)
	}
	if routed != nil && got != verdictOf(*routed) {
		fail("the router decided %v but wrote %v", verdictOf(*routed), got)
	}
	if err := d.checkBytes(&msg, &out, got, ref.writer); err != nil {
		fail("the router's record: %v", err)
	}

	// 2. explain: the code `residency explain` decides with.
	ev, err := l.explain.DecideOne(l.ctx, msg, d.rs)
	if err != nil {
		fail("explain: %v", err)
	} else if x := verdictOf(ev.Decision); x != got {
		fail("explain says %v, the router %v", x, got)
	}

	// explain given only the routing fields, as JSON, of a readable event.
	if ref.native != nil && ref.alt == "" {
		if err := l.explainFields(&ref, got); err != nil {
			fail("explain of the routing fields: %v", err)
		}
	}

	// 3. The sink, reading the record as its residency-schema header says.
	if err := l.sinkReading(&out, got, &ref); err != nil {
		fail("sink: %v", err)
	}
}

// explainFields asks explain's code about the routing fields of a
// readable event alone, as a producer would write them
// ({"country": "US", "user_id": "u-1"}, nested paths as nested objects,
// null where the event has none): schemas.FieldsFromJSON, then
// Pipeline.PlaceFields. It must decide as the router did (got).
func (l *legs) explainFields(ref *reading, got verdict) error {
	doc := map[string]any{}
	put := func(path []string, v []byte, ok bool) {
		m := doc
		for _, seg := range path[:len(path)-1] {
			sub, isObj := m[seg].(map[string]any)
			if !isObj {
				sub = map[string]any{}
				m[seg] = sub
			}
			m = sub
		}
		if ok {
			m[path[len(path)-1]] = string(v)
		} else {
			m[path[len(path)-1]] = nil
		}
	}
	put(l.d.countryPath, ref.fields.Country, ref.fields.HasCountry)
	put(l.d.userPath, ref.fields.UserID, ref.fields.UserID != nil)
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	f, err := schemas.FieldsFromJSON(data, strings.Join(l.d.countryPath, "."), strings.Join(l.d.userPath, "."))
	if err != nil {
		if !ref.fields.HasCountry && ref.fields.UserID == nil {
			return nil // neither field: explain asks for one
		}
		return fmt.Errorf("%s: %v", data, err)
	}
	ev, err := l.explain.PlaceFields(l.ctx, f, l.d.rs)
	if err != nil {
		return err
	}
	if x := verdictOf(ev.Decision); x != got {
		return fmt.Errorf("%s: explain says %v, the router %v", data, x, got)
	}
	return nil
}

// outputVerdict reads the decision a record the router wrote states: its
// topic and its residency headers.
func (d *deployment) outputVerdict(out *stream.Message) (verdict, error) {
	var v verdict
	switch out.Topic {
	case d.quarantine:
		v.Outcome = router.Quarantined
	case d.deadLetter:
		v.Outcome = router.DeadLettered
	default:
		for region, topic := range d.pinned {
			if out.Topic == topic {
				v.Outcome = router.Routed
				if r, _ := router.HeaderValue(out.Headers, router.HeaderRegion); string(r) != region {
					return v, fmt.Errorf("in the pinned topic of region %s with residency-region %q", region, r)
				}
			}
		}
		if v.Outcome == 0 {
			return v, fmt.Errorf("written to %s, neither a pinned topic nor quarantine nor dead-letter", out.Topic)
		}
	}
	h := func(k string) string { b, _ := router.HeaderValue(out.Headers, k); return string(b) }
	v.Reason, v.Jurisdiction, v.Region, v.Pinned = h(router.HeaderReason), h(router.HeaderJurisdiction), h(router.HeaderRegion), h(router.HeaderDecidedBy) == "pin"
	return v, nil
}

// checkBytes checks that out, the router's record of in (decided v, read
// with writer), holds in's key, value and producer headers exactly (null
// apart from empty, order and repeats kept; residency-* headers dropped),
// followed by exactly the residency headers v calls for.
func (d *deployment) checkBytes(in, out *stream.Message, v verdict, writer string) error {
	tooLarge := v.Outcome == router.DeadLettered && v.Reason == "too_large"
	if !sameBytes(out.Key, in.Key) {
		return fmt.Errorf("key %s, want %s", showBytes(out.Key), showBytes(in.Key))
	}
	wantValue := in.Value
	if tooLarge {
		wantValue = nil // kept at its source coordinates only
	}
	if !sameBytes(out.Value, wantValue) {
		return fmt.Errorf("value %s, want %s", showBytes(out.Value), showBytes(wantValue))
	}
	var producer []stream.Header
	for _, h := range in.Headers {
		if !strings.HasPrefix(h.Key, router.HeaderPrefix) {
			producer = append(producer, h)
		}
	}
	if len(out.Headers) < len(producer) {
		return fmt.Errorf("%d headers, fewer than the producer's %d", len(out.Headers), len(producer))
	}
	for i, h := range producer {
		if o := out.Headers[i]; o.Key != h.Key || !sameBytes(o.Value, h.Value) {
			return fmt.Errorf("header %d is %q=%s, want %q=%s", i, o.Key, showBytes(o.Value), h.Key, showBytes(h.Value))
		}
	}
	want := map[string]string{
		router.HeaderSourceTopic:     in.Topic,
		router.HeaderSourcePartition: strconv.Itoa(in.Partition),
		router.HeaderSourceOffset:    strconv.FormatInt(in.Offset, 10),
		router.HeaderRouter:          routerInstance,
	}
	set := func(k, val string) {
		if val != "" {
			want[k] = val
		}
	}
	set(router.HeaderJurisdiction, v.Jurisdiction)
	set(router.HeaderRegion, v.Region)
	set(router.HeaderReason, v.Reason)
	set(router.HeaderSchema, writer)
	if v.Outcome != router.DeadLettered {
		want[router.HeaderRulesetVersion] = strconv.Itoa(rulesetVersion)
		want[router.HeaderRulesetDigest] = d.rs.ShortDigest()
		if v.Jurisdiction != "" {
			want[router.HeaderDecidedBy] = map[bool]string{false: "country", true: "pin"}[v.Pinned]
		}
	} else {
		want[router.HeaderError] = "" // any, not empty
	}
	if tooLarge {
		want[router.HeaderOmittedBytes] = strconv.Itoa(recordSize(in))
	}
	seen := map[string]bool{}
	for _, h := range out.Headers[len(producer):] {
		w, ok := want[h.Key]
		switch {
		case !ok:
			return fmt.Errorf("header %q=%s is not one the decision calls for", h.Key, showBytes(h.Value))
		case seen[h.Key]:
			return fmt.Errorf("header %q twice", h.Key)
		case h.Key == router.HeaderError:
			if len(h.Value) == 0 || len(h.Value) > 200 {
				return fmt.Errorf("residency-error of %d bytes", len(h.Value))
			}
		case string(h.Value) != w:
			return fmt.Errorf("header %q=%s, want %q", h.Key, showBytes(h.Value), w)
		}
		seen[h.Key] = true
	}
	for k := range want {
		if !seen[k] {
			return fmt.Errorf("no %s header", k)
		}
	}
	return nil
}

// sinkReading re-derives the placement of out, the router's record
// (decided v), as a sink does: the value read the way its
// residency-schema header says (DecodeJSONFastRef for the document and
// its keys, then ExtractRef for the routing fields), the user's pin, and
// sink.CheckContent under the ruleset version its header names. A routed
// record must decode and pass with the router's decision, its document
// and keys those of goavro's decoding. A quarantined one must read the
// same fields, router.Decide on them must place it as the reference does
// before the router's destinations, and CheckContent must refuse it. A
// dead-lettered one with a residency-schema header must fail to decode
// the same way (its extraction with the router's reason).
func (l *legs) sinkReading(out *stream.Message, v verdict, ref *reading) error {
	h, ok := router.HeaderValue(out.Headers, router.HeaderSchema)
	if !ok {
		if v.Outcome != router.DeadLettered {
			return errors.New("no residency-schema header: the sink would refuse it")
		}
		return nil
	}
	wref, err := schemas.ParseWriterRef(string(h))
	if err != nil {
		return err
	}
	doc, keys, derr := l.sinkDec.DecodeJSONFastRef(l.ctx, wref, out.Value)
	f, xerr := l.sinkDec.ExtractRef(l.ctx, wref, out.Value)
	if v.Outcome == router.DeadLettered {
		// The sink refuses what either fails on; its extraction reads
		// exactly what the router read. (Its document transcoder is
		// lenient where only the routing fields are checked: a string
		// that is not UTF-8 elsewhere becomes U+FFFD in the document.)
		switch {
		case xerr == nil:
			return fmt.Errorf("dead-lettered as %s, but the sink reads its routing fields by its header", v.Reason)
		case schemas.Reason(xerr) != v.Reason:
			return fmt.Errorf("dead-lettered as %s, the sink's reading by its header fails with %s: %v", v.Reason, schemas.Reason(xerr), xerr)
		case derr != nil && errors.Is(derr, schemas.ErrUnknownSchema) != errors.Is(xerr, schemas.ErrUnknownSchema):
			return fmt.Errorf("the sink's decode (%v) and extraction (%v) disagree on the schema", derr, xerr)
		}
		return nil
	}
	if derr != nil || xerr != nil {
		return fmt.Errorf("%v by its header, the sink cannot read it (decode: %v, extract: %v)", v.Outcome, derr, xerr)
	}
	if ref.native != nil {
		if !bytes.Equal(f.Country, ref.fields.Country) || f.HasCountry != ref.fields.HasCountry || !bytes.Equal(f.UserID, ref.fields.UserID) {
			return fmt.Errorf("the sink reads country %q/%v, user %q; goavro %q/%v, %q", f.Country, f.HasCountry, f.UserID,
				ref.fields.Country, ref.fields.HasCountry, ref.fields.UserID)
		}
	}
	pin := ""
	if len(f.UserID) > 0 {
		pin = l.pins[string(f.UserID)]
	}
	if ver, _ := router.HeaderValue(out.Headers, router.HeaderRulesetVersion); string(ver) != l.d.rs.VersionString() {
		return fmt.Errorf("residency-ruleset-version %q", ver)
	}
	d, cerr := sink.CheckContent(out.Headers, f, pin, l.d.rs)
	if v.Outcome == router.Quarantined {
		if cerr == nil || !errors.Is(cerr, sink.ErrContentMismatch) {
			return fmt.Errorf("quarantined as %s, but CheckContent accepts it: %v", v.Reason, cerr)
		}
		if got := router.Decide(f, pin, l.d.rs); verdictOf(got) != verdictOf(ref.placed) {
			return fmt.Errorf("the sink's decision on its reading %v, the reference's %v", verdictOf(got), verdictOf(ref.placed))
		}
		return nil
	}
	if cerr != nil {
		return fmt.Errorf("routed, refused by CheckContent: %v", cerr)
	}
	if verdictOf(d) != v {
		return fmt.Errorf("CheckContent re-derives %v, the router %v", verdictOf(d), v)
	}
	if ref.native == nil {
		return nil // the router was stricter than goavro (ref.alt): nothing to compare
	}
	// The sink's key fields are goavro's. (An event without event_id or
	// occurred_at is routed — the router reads only the routing fields —
	// and its sink refuses it, sink_missing_field: exactly when goavro
	// finds none either.)
	id, _ := unwrapUnion(ref.native["event_id"]).(string)
	at, _ := unwrapUnion(ref.native["occurred_at"]).(time.Time)
	if keys.EventID != id || !keys.OccurredAt.Equal(at) {
		return fmt.Errorf("the sink reads event_id %q, occurred_at %v; goavro %q, %v", keys.EventID, keys.OccurredAt, id, at)
	}
	return sameDocument(doc, ref)
}

// sameDocument checks the sink's JSON document of an event against the
// document of goavro's decoding of it (schemas.RenderJSON of its native
// form: the sinks' document format, docs/sinks.md).
func sameDocument(doc []byte, ref *reading) error {
	text, err := schemas.RenderJSON(nil, ref.w.text, ref.native)
	if err != nil {
		return fmt.Errorf("rendering goavro's decoding: %v", err)
	}
	var a, b any
	if err := json.Unmarshal(doc, &a); err != nil {
		return fmt.Errorf("the sink's document is not JSON: %v", err)
	}
	if err := json.Unmarshal(text, &b); err != nil {
		return fmt.Errorf("goavro's document is not JSON: %v", err)
	}
	if !reflect.DeepEqual(a, b) {
		return fmt.Errorf("the sink's document %s, goavro's %s", doc, text)
	}
	return nil
}

// recordSize is the size of m as the limits count it.
func recordSize(m *stream.Message) int {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// sameBytes reports whether a and b hold the same bytes and are both null
// or both not.
func sameBytes(a, b []byte) bool { return (a == nil) == (b == nil) && bytes.Equal(a, b) }

// showBytes formats b for a failure message: null, or quoted (cut short).
func showBytes(b []byte) string {
	if b == nil {
		return "null"
	}
	if len(b) > 40 {
		return fmt.Sprintf("%q... (%d bytes)", b[:40], len(b))
	}
	return fmt.Sprintf("%q", b)
}

// cut shortens a value for a failure message.
func cut(b []byte) []byte {
	if len(b) > 300 {
		return b[:300]
	}
	return b
}
