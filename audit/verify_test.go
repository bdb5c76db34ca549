package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// world is a small residency deployment in memory: an ingest topic, pinned
// topics on two clusters, quarantine, stores, routers and sinks that log
// leaves to an audit feed and attest what they write, as the wiring of the
// next phase will.
type world struct {
	t      *testing.T
	feed   *memFeed
	store  *MemStore
	topics map[partKey][]Record
	rows   map[string][]storedRow
	// decode is the EventDecoder Rows uses (decodeWorld; nil: none).
	decode   EventDecoder
	attester *Attester
	verifier *AttestVerifier
	policy   *Policy
	rs       RulesetRef
	batch    []Leaf
	time     int64
}

const ingest = "ingest"

func newWorld(t *testing.T) *world {
	w := &world{
		t: t, feed: newMemFeed(3), store: &MemStore{},
		topics: map[partKey][]Record{}, rows: map[string][]storedRow{}, time: 1764028800000, decode: decodeWorld,
	}
	w.attester, _ = NewAttester(testKey("k1"))
	w.verifier, _ = NewAttestVerifier(testKey("k1"))
	w.policy = NewPolicy(
		[]PolicyJurisdiction{{Name: "US", Region: "us"}, {Name: "EU", Region: "eu"}},
		[]PolicyRegion{{Name: "us", Cluster: "a", Topic: "residency.us"}, {Name: "eu", Cluster: "b", Topic: "residency.eu"}},
		[]PolicyStore{{Name: "us-postgres", Regions: []string{"us"}}, {Name: "eu-objectstore", Regions: []string{"eu"}}})
	content := "jurisdictions: [US, EU]\n"
	w.rs = RulesetRef{Version: 3, Digest: Sum([]byte(content))}
	w.log(Leaf{Kind: KindRuleset, Time: w.time, Actor: "router-a", Ruleset: w.rs, Policy: w.policy, Content: content})
	return w
}

func (w *world) log(l Leaf) {
	w.batch = append(w.batch, l)
}

// flush appends the batch's leaves to the audit feed (the Ledger.Append
// before the commit).
func (w *world) flush() {
	if len(w.batch) > 0 {
		w.feed.add(w.t, 0, w.batch...)
		w.batch = nil
	}
}

func (w *world) produce(cluster, topic string, p int32, rec Record) int64 {
	k := partKey{cluster, topic, p}
	rec.Partition, rec.Offset = p, int64(len(w.topics[k]))
	w.topics[k] = append(w.topics[k], rec)
	return rec.Offset
}

// event puts one event on the ingest topic and returns its offset.
func (w *world) event(p int32, jurisdiction string, n int) int64 {
	return w.produce(ingest, "events", p, Record{Key: []byte("user-" + strconv.Itoa(n)), Value: []byte(fmt.Sprintf("event %d of %s", n, jurisdiction))})
}

// route decides and writes ingest record (p, off) as a router does, with
// leaf and attestation.
func (w *world) route(p int32, off int64) {
	src := w.topics[partKey{ingest, "events", p}][off]
	jur := strings.Fields(string(src.Value))[3]
	w.time++
	l := Leaf{Kind: KindRoute, Time: w.time, Actor: "router-a", Src: Source{Topic: "events", Partition: p, Offset: off}, Ruleset: w.rs}
	l.SetRecord(src.Key, src.Value)
	in := AttestationInput{Value: l.Value, Key: l.Key, KeyNull: l.KeyNull, RulesetVersion: w.rs.Version, SrcTopic: "events", SrcPartition: p, SrcOffset: off}
	hs := []Header{{"residency-ruleset-version", []byte(strconv.FormatInt(w.rs.Version, 10))}, {"residency-source-topic", []byte("events")},
		{"residency-source-partition", []byte(strconv.Itoa(int(p)))}, {"residency-source-offset", []byte(strconv.FormatInt(off, 10))}}
	var cluster, topic string
	if region, ok := w.policy.RegionOf(jur); ok {
		g, _ := w.policy.Region(region)
		l.Decision, l.DecidedBy, l.Jurisdiction, l.Region = Routed, "country", jur, region
		cluster, topic = g.Cluster, g.Topic
		hs = append(hs, Header{"residency-jurisdiction", []byte(jur)}, Header{"residency-region", []byte(region)})
	} else {
		l.Decision, l.Reason = Quarantined, "unknown_country"
		cluster, topic = ingest, "residency.quarantine"
		hs = append(hs, Header{"residency-reason", []byte("unknown_country")})
	}
	in.Decision, in.Reason, in.Jurisdiction, in.Region, in.DestCluster, in.DestTopic = l.Decision, l.Reason, l.Jurisdiction, l.Region, cluster, topic
	hs = append(hs, Header{HeaderAttestation, w.attester.AppendTag(nil, &in)})
	dp := p % 2
	doff := w.produce(cluster, topic, dp, Record{Key: src.Key, Value: src.Value, Headers: hs})
	l.Dest = Destination{Cluster: cluster, Topic: topic, Partition: dp, Offset: doff}
	w.log(l)
}

// sink stores every record of a region's pinned topic into store.
func (w *world) sink(store, region string) {
	g, _ := w.policy.Region(region)
	for p := int32(0); p < 2; p++ {
		for _, rec := range w.topics[partKey{g.Cluster, g.Topic, p}] {
			w.time++
			jur := string(header(rec.Headers, "residency-jurisdiction"))
			l := Leaf{Kind: KindSinkWrite, Time: w.time, Actor: "sink:" + store,
				Src:      Source{Cluster: g.Cluster, Topic: g.Topic, Partition: p, Offset: rec.Offset},
				Decision: Written, Jurisdiction: jur, Region: region, Ruleset: w.rs, Dest: Destination{Store: store}}
			l.SetRecord(rec.Key, rec.Value)
			w.log(l)
			w.rows[store] = append(w.rows[store], storeRow(g.Topic, p, rec.Offset, rec.Value, region, jur))
		}
	}
}

// run routes n events per partition (every 7th of no known jurisdiction),
// then sinks both regions, and integrates the log.
func (w *world) run(n int) {
	for i := 0; i < n; i++ {
		for p := int32(0); p < 2; p++ {
			jur := []string{"US", "EU"}[i%2]
			if i%7 == 3 {
				jur = "ZZ"
			}
			w.route(p, w.event(p, jur, i*2+int(p)))
		}
		if i%10 == 9 {
			w.flush()
		}
	}
	w.flush()
	w.sink("us-postgres", "us")
	w.sink("eu-objectstore", "eu")
	w.flush()
	w.integrate()
}

func (w *world) integrate() {
	it, err := NewIntegrator(IntegratorConfig{Store: w.store, Feed: w.feed, SignerKey: testLogKey})
	if err != nil {
		w.t.Fatal(err)
	}
	for {
		n, err := it.Step(context.Background())
		if err != nil {
			w.t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

// drop deletes a record from a topic (a tombstone compacted, a purge).
func (w *world) drop(k partKey, off int64) {
	w.topics[k][off].Value, w.topics[k][off].Headers = nil, nil
}

func (w *world) Records(_ context.Context, r TopicRange, fn func(*Record) error) error {
	for i := range w.topics[partKey{r.Cluster, r.Topic, r.Partition}] {
		rec := w.topics[partKey{r.Cluster, r.Topic, r.Partition}][i]
		if rec.Kind == KindData && rec.Value == nil && rec.Headers == nil { // deleted (compacted away) in a test
			continue
		}
		if err := fn(&rec); err != nil {
			return err
		}
	}
	return nil
}

// storedRow is a row as a store holds it: the columns Row carries as they
// are, and those it carries as digests (SetColumns).
type storedRow struct {
	Row
	eventID, userID, sourceTopic string
	event, raw                   []byte
}

// decodeWorld is the world's EventDecoder: the value "event N of J" is
// event "ev-N" of user "user-N", the document {"n":N,"country":"J"}.
func decodeWorld(_ context.Context, sourceTopic string, raw []byte) (string, string, []byte, error) {
	f := strings.Fields(string(raw))
	if sourceTopic != "events" || len(f) != 4 || f[0] != "event" || f[2] != "of" {
		return "", "", nil, fmt.Errorf("%w: not an event of topic events", ErrUndecodable)
	}
	return "ev-" + f[1], "user-" + f[1], []byte(`{"n":` + f[1] + `,"country":"` + f[3] + `"}`), nil
}

// storeRow is the row a sink writes for the record at (topic, p, off) with
// value raw: its columns derived from the value as the sink does.
func storeRow(topic string, p int32, off int64, raw []byte, region, jur string) storedRow {
	id, user, doc, _ := decodeWorld(context.Background(), "events", raw)
	// As the PostgreSQL store keeps it: jsonb reorders members and
	// rewrites numbers.
	var m map[string]any
	if json.Unmarshal(doc, &m) == nil {
		doc, _ = json.Marshal(m)
	}
	return storedRow{Row: Row{Topic: topic, Partition: p, Offset: off, Value: Sum(raw), Region: region, Jurisdiction: jur, RulesetVersion: "3"},
		eventID: id, userID: user, sourceTopic: "events", event: doc, raw: raw}
}

func (w *world) Rows(ctx context.Context, store string, fn func(*Row) error) error {
	for i := range w.rows[store] {
		sr := w.rows[store][i]
		row := sr.Row
		if err := row.SetColumns(ctx, w.decode, sr.eventID, sr.userID, sr.event, sr.sourceTopic, sr.raw); err != nil {
			return err
		}
		if err := fn(&row); err != nil {
			return err
		}
	}
	return nil
}

// verify runs every check over the whole world.
func (w *world) verify(cfg VerifyConfig) *Report {
	w.t.Helper()
	ctx := context.Background()
	cfg.LogKey = testLogPub
	cfg.IngestCluster = ingest
	if cfg.Attestation == nil {
		cfg.Attestation = w.verifier
	}
	v, err := VerifyLog(ctx, w.store, cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	var offs []TopicRange
	var ranges []TopicRange
	for k, recs := range w.topics {
		switch {
		case k.topic == "events":
			offs = append(offs, TopicRange{Cluster: ingest, Topic: k.topic, Role: RoleIngest, Partition: k.partition, From: 0, To: int64(len(recs))})
		case k.topic == "residency.sink-quarantine":
			ranges = append(ranges, TopicRange{Cluster: k.cluster, Topic: k.topic, Role: RoleSinkQuarantine, Partition: k.partition, From: 0, To: int64(len(recs))})
		case k.topic == "residency.hold":
			ranges = append(ranges, TopicRange{Cluster: k.cluster, Topic: k.topic, Role: RoleHold, Partition: k.partition, From: 0, To: int64(len(recs))})
		case k.topic == "residency.dead-letter":
			ranges = append(ranges, TopicRange{Cluster: k.cluster, Topic: k.topic, Role: RoleDeadLetter, Partition: k.partition, From: 0, To: int64(len(recs))})
		case k.topic == "residency.quarantine":
			ranges = append(ranges, TopicRange{Cluster: k.cluster, Topic: k.topic, Role: RoleQuarantine, Partition: k.partition, From: 0, To: int64(len(recs))})
		default:
			ranges = append(ranges, TopicRange{Cluster: k.cluster, Topic: k.topic, Role: RolePinned, Partition: k.partition, From: 0, To: int64(len(recs))})
		}
	}
	if err := v.VerifyCompleteness(ctx, offs, w); err != nil {
		w.t.Fatal(err)
	}
	if err := v.VerifyPlacement(ctx, ranges, w); err != nil {
		w.t.Fatal(err)
	}
	if err := v.VerifyStores(ctx, []StoreCheck{{Store: "us-postgres", Cluster: "a"}, {Store: "eu-objectstore", Cluster: "b"}}, w); err != nil {
		w.t.Fatal(err)
	}
	return v.Report()
}

func codes(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, string(f.Code))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// expect checks that the report's findings have exactly the given codes.
func expect(t *testing.T, r *Report, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := codes(r.Findings); !slices.Equal(got, want) {
		var b bytes.Buffer
		r.WriteTable(&b)
		t.Fatalf("finding codes %v, want %v\n%s", got, want, b.String())
	}
}

// expectHas checks that the report's findings include code (a tampered log
// also breaks what was derived from it).
func expectHas(t *testing.T, r *Report, code string) {
	t.Helper()
	if !slices.Contains(codes(r.Findings), code) {
		var b bytes.Buffer
		r.WriteTable(&b)
		t.Fatalf("no %s finding\n%s", code, b.String())
	}
}

func TestVerifyCleanWorldPasses(t *testing.T) {
	w := newWorld(t)
	w.run(60)
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if r.Checked.Offsets != 120 || r.Checked.Rows == 0 || r.Checked.Records != 120 {
		t.Fatalf("checked %+v", r.Checked)
	}
	if r.Counts["us"].Events == 0 || r.Counts["eu"].Events == 0 || r.Counts["(quarantine)"].Events == 0 ||
		r.Counts["us"].Events+r.Counts["eu"].Events+r.Counts["(quarantine)"].Events != 120 {
		t.Fatalf("counts %+v %+v %+v", r.Counts["us"], r.Counts["eu"], r.Counts["(quarantine)"])
	}
}

func TestVerifyExplainsDuplicates(t *testing.T) {
	w := newWorld(t)
	off := w.event(0, "EU", 1)
	w.route(0, off)
	w.flush()
	// The router crashed after logging and producing, before committing:
	// the next member routes the offset again.
	w.route(0, off)
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if got := codes(r.Notes); !slices.Equal(got, []string{"duplicate_leaf"}) {
		t.Fatalf("notes %v", got)
	}
}

func TestVerifyConflictingDecisions(t *testing.T) {
	w := newWorld(t)
	off := w.event(0, "EU", 1)
	w.route(0, off)
	// A second leaf for the offset, same ruleset, another decision.
	l := w.batch[len(w.batch)-1]
	l.Decision, l.Jurisdiction, l.Region, l.Dest = Quarantined, "", "", Destination{}
	l.Reason = "no_country"
	w.log(l)
	w.flush()
	w.integrate()
	expect(t, w.verify(VerifyConfig{}), "conflicting_decisions")
}

// Each tampering class of the acceptance, one at a time.

func TestVerifyTamperDeleteLeafInLog(t *testing.T) {
	w := newWorld(t)
	w.run(20)
	path := w.firstBundle()
	b, _ := w.store.Get(context.Background(), path)
	leaves, _ := SplitBundle(b)
	var nb []byte
	for i, l := range leaves {
		if i != 5 {
			nb = AppendBundle(nb, l)
		}
	}
	w.store.Put(context.Background(), path, nb)
	expectHas(t, w.verify(VerifyConfig{}), "altered_log")
}

// firstBundle returns the path of the first entry bundle.
func (w *world) firstBundle() string {
	log, err := OpenLog(context.Background(), w.store, testLogPub)
	if err != nil {
		w.t.Fatal(err)
	}
	return TilePath(tlog.Tile{H: TileHeight, L: -1, N: 0, W: int(min(log.Checkpoint().Size, tileWidth))})
}

func TestVerifyTamperDeleteLeafBeforeIntegration(t *testing.T) {
	w := newWorld(t)
	off := w.event(1, "US", 1)
	w.route(1, off)
	w.batch = w.batch[:len(w.batch)-1] // the leaf never reaches the log
	w.run(5)
	r := w.verify(VerifyConfig{})
	expect(t, r, "missing_leaf", "unlogged_record")
	for _, f := range r.Findings {
		if f.Code == CodeMissingLeaf && (f.Topic != "events" || f.Partition != 1 || f.Offset != off) {
			t.Errorf("missing_leaf at %s", f.where())
		}
	}
}

func TestVerifyTamperAlterLeaf(t *testing.T) {
	w := newWorld(t)
	w.run(20)
	path := w.firstBundle()
	b, _ := w.store.Get(context.Background(), path)
	nb := bytes.Replace(b, []byte(`"jurisdiction":"EU","region":"eu"`), []byte(`"jurisdiction":"EU","region":"us"`), 1)
	if bytes.Equal(b, nb) {
		t.Fatal("nothing altered")
	}
	w.store.Put(context.Background(), path, nb)
	expectHas(t, w.verify(VerifyConfig{}), "altered_log")
}

func TestVerifyTamperRecordWithCopiedHeaders(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	// Someone writes straight into the US pinned topic, copying every
	// header (the attestation too) from a real record.
	k := partKey{"a", "residency.us", 0}
	real := w.topics[k][0]
	w.produce("a", "residency.us", 0, Record{Key: real.Key, Value: []byte("forged event"), Headers: real.Headers})
	expect(t, w.verify(VerifyConfig{}), "unlogged_record", "bad_attestation")
}

func TestVerifyTamperInsertRow(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	w.rows["us-postgres"] = append(w.rows["us-postgres"], storedRow{Row: Row{Topic: "residency.us", Partition: 0, Offset: 999, Value: Sum([]byte("x")), Region: "us", Jurisdiction: "US"}})
	expect(t, w.verify(VerifyConfig{}), "unlogged_row")
}

func TestVerifyTamperChangeRowRegion(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	w.rows["us-postgres"][2].Region = "eu"
	expect(t, w.verify(VerifyConfig{}), "row_mismatch")
}

func TestVerifyTamperDropRecordFromPinnedTopic(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	// A compacted tombstone or a rewritten topic: the record is gone.
	w.drop(partKey{"b", "residency.eu", 1}, 1)
	r := w.verify(VerifyConfig{})
	expect(t, r, "missing_record")
	if f := r.Findings[0]; f.Cluster != "b" || f.Topic != "residency.eu" || f.Partition != 1 || f.Offset != 1 {
		t.Errorf("missing_record at %s", f.where())
	}
}

func TestVerifyTamperDropRowFromStore(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	w.rows["eu-objectstore"] = w.rows["eu-objectstore"][1:]
	expect(t, w.verify(VerifyConfig{}), "missing_row")
}

func TestVerifyTamperCheckpointNotExtending(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	prev, _ := w.store.Get(context.Background(), CheckpointPath)
	// The log is rebuilt from scratch with one leaf fewer and more after
	// it, and signed with the real key.
	w2 := newWorld(t)
	w2.run(12)
	expect(t, w2.verify(VerifyConfig{Previous: prev}), "checkpoint_not_extending")
	// The honest continuation extends it.
	w.run(3)
	r := w.verify(VerifyConfig{Previous: prev})
	expect(t, r)
	if r.Previous == nil || r.Previous.Size >= r.Checkpoint.Size {
		t.Fatalf("previous %+v", r.Previous)
	}
}

func TestVerifyBadSignature(t *testing.T) {
	w := newWorld(t)
	w.run(3)
	_, otherPub, _ := GenerateLogKey("residency.test/audit")
	v, err := VerifyLog(context.Background(), w.store, VerifyConfig{LogKey: otherPub})
	if err != nil {
		t.Fatal(err)
	}
	r := v.Report()
	expect(t, r, "bad_signature")
	// Nothing of the checkpoint is shown as verified.
	text := reportText(t, r)
	if !strings.Contains(text, "checkpoint  NOT verified (see the findings)") || strings.Contains(text, "size 0") {
		t.Fatalf("text report:\n%s", text)
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "<strong>NOT verified</strong>") || strings.Contains(page.String(), "Checkpoint verified") {
		t.Fatal("the HTML report shows the checkpoint as verified")
	}
}

func TestVerifyMisplacedAndUnapproved(t *testing.T) {
	w := newWorld(t)
	w.run(4)
	// A router that logs EU events as region us (and writes them there).
	off := w.event(0, "EU", 100)
	w.route(0, off)
	l := &w.batch[len(w.batch)-1]
	l.Region = "us"
	rec := w.topics[partKey{l.Dest.Cluster, l.Dest.Topic, l.Dest.Partition}][l.Dest.Offset]
	w.drop(partKey{l.Dest.Cluster, l.Dest.Topic, l.Dest.Partition}, l.Dest.Offset)
	l.Dest = Destination{Cluster: "a", Topic: "residency.us", Partition: 0, Offset: w.produce("a", "residency.us", 0, rec)}
	w.flush()
	// A sink that writes EU data into the US store.
	w.time++
	sl := Leaf{Kind: KindSinkWrite, Time: w.time, Actor: "sink:us-postgres", Src: Source{Cluster: "a", Topic: "residency.us", Partition: 0, Offset: l.Dest.Offset},
		Decision: Written, Jurisdiction: "EU", Region: "eu", Ruleset: w.rs, Dest: Destination{Store: "us-postgres"}}
	sl.SetRecord(rec.Key, rec.Value)
	w.log(sl)
	w.rows["us-postgres"] = append(w.rows["us-postgres"], storeRow("residency.us", 0, l.Dest.Offset, rec.Value, "eu", "EU"))
	w.flush()
	w.integrate()
	// The record was attested for eu on cluster b, so it fails there too.
	expect(t, w.verify(VerifyConfig{}), "misplaced_record", "unapproved_store", "bad_attestation")
}

// TestVerifyStoreKeepsOneCopy: a router's duplicate of an event at other
// pinned-topic coordinates, logged as written by the sink, while the store
// (idempotent on the event id) kept only the first copy, is a note, not a
// missing row; a logged write whose value no row holds is still one.
func TestVerifyStoreKeepsOneCopy(t *testing.T) {
	w := newWorld(t)
	w.run(4)
	row := w.rows["us-postgres"][0]
	first := Leaf{Kind: KindSinkWrite, Time: w.time, Actor: "sink:us-postgres",
		Src:      Source{Cluster: "a", Topic: row.Topic, Partition: row.Partition, Offset: row.Offset},
		Decision: Written, Jurisdiction: row.Jurisdiction, Region: row.Region, Ruleset: w.rs, Dest: Destination{Store: "us-postgres"}}
	rec := w.topics[partKey{"a", row.Topic, row.Partition}][row.Offset]
	first.SetRecord(rec.Key, rec.Value)
	dup := first
	dup.Src.Offset += 1000
	w.log(dup)
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if got := codes(r.Notes); !slices.Equal(got, []string{"duplicate_leaf"}) {
		t.Fatalf("notes %v", got)
	}
	other := first
	other.Src.Offset += 2000
	other.Value = Sum([]byte("an event no row holds"))
	w.log(other)
	w.flush()
	w.integrate()
	expect(t, w.verify(VerifyConfig{}), "missing_row")
	// Another event with the same bytes in its value but another key (or
	// event id) is not the stored copy: its row is missing.
	w2 := newWorld(t)
	w2.run(4)
	twin := first
	twin.Src.Offset += 3000
	twin.Key = Sum([]byte("another user"))
	w2.log(twin)
	w2.flush()
	w2.integrate()
	expect(t, w2.verify(VerifyConfig{}), "missing_row")
}

func TestVerifyUnknownRuleset(t *testing.T) {
	w := newWorld(t)
	w.batch = nil // no ruleset leaf
	w.run(3)
	expect(t, w.verify(VerifyConfig{}), "unknown_ruleset")
}

func TestVerifyPurgeAndErasureAreNotes(t *testing.T) {
	w := newWorld(t)
	w.run(6)
	// Purge the first two records of a pinned topic and log it.
	k := partKey{"a", "residency.us", 0}
	w.drop(k, 0)
	w.drop(k, 1)
	w.log(Leaf{Kind: KindPurge, Time: w.time, Actor: "purge", Src: Source{Cluster: "a", Topic: "residency.us", Partition: 0, Offset: 0, EndOffset: 2}, Decision: Purged, Count: 2})
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if got := codes(r.Notes); !slices.Equal(got, []string{"purged"}) {
		t.Fatalf("notes %v", got)
	}
}

func TestVerifySinkRefusal(t *testing.T) {
	w := newWorld(t)
	w.run(4)
	// A sink refuses a record of the EU pinned topic (say its region moved)
	// and republishes it, byte for byte with the router's headers and its
	// own reason, error and store added, to its quarantine topic on the
	// ingest cluster.
	rec := w.topics[partKey{"b", "residency.eu", 0}][0]
	qhs := append(slices.Clip(rec.Headers), Header{"residency-reason", []byte("sink_region_moved")},
		Header{"residency-error", []byte("moved")}, Header{"residency-sink-store", []byte("eu-objectstore")})
	off := w.produce(ingest, "residency.sink-quarantine", 0, Record{Key: rec.Key, Value: rec.Value, Headers: qhs})
	l := Leaf{Kind: KindSinkRefusal, Time: w.time, Actor: "sink:eu-objectstore",
		Src:      Source{Cluster: "b", Topic: "residency.eu", Partition: 0, Offset: rec.Offset},
		Decision: Refused, Reason: "sink_region_moved", Jurisdiction: "EU", Region: "eu", Ruleset: w.rs,
		Dest: Destination{Cluster: ingest, Topic: "residency.sink-quarantine", Partition: 0, Offset: off}}
	l.SetRecord(rec.Key, rec.Value)
	w.log(l)
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if r.Counts["(refused by a sink)"] == nil || r.Counts["(refused by a sink)"].Records != 1 {
		t.Fatalf("counts %v", r.Counts)
	}
	// A record dropped into the sink quarantine topic by anyone else.
	w.produce(ingest, "residency.sink-quarantine", 0, Record{Key: rec.Key, Value: []byte("other"), Headers: rec.Headers})
	expect(t, w.verify(VerifyConfig{}), "unlogged_record", "bad_attestation")
}

func TestLogHoldsNoPayloads(t *testing.T) {
	w := newWorld(t)
	w.run(30)
	for _, path := range w.store.Paths() {
		b, _ := w.store.Get(context.Background(), path)
		for _, recs := range w.topics {
			for _, r := range recs {
				if bytes.Contains(b, r.Value) || (len(r.Key) > 0 && bytes.Contains(b, r.Key)) {
					t.Fatalf("%s holds a record's value or key", path)
				}
			}
		}
	}
}

func TestVerifyRulesetMismatch(t *testing.T) {
	w := newWorld(t)
	w.run(3)
	// The policy the world logged is the one its content stands for.
	honest := func([]byte) (*Policy, error) { return w.policy, nil }
	expect(t, w.verify(VerifyConfig{PolicyOf: honest}))
	// A router that logs a policy its ruleset does not define (EU -> us).
	lying := NewPolicy(
		[]PolicyJurisdiction{{Name: "US", Region: "us"}, {Name: "EU", Region: "us"}},
		w.policy.Regions, w.policy.Stores)
	w2 := newWorld(t)
	w2.batch[0].Policy = lying
	w2.run(3)
	expectHas(t, w2.verify(VerifyConfig{PolicyOf: honest}), "ruleset_mismatch")
	// The same version logged twice with different policies.
	w3 := newWorld(t)
	l := w3.batch[0]
	l.Policy = lying
	w3.log(l)
	w3.run(3)
	expectHas(t, w3.verify(VerifyConfig{}), "ruleset_mismatch")
}

func TestVerifyTooLargeDeadLetter(t *testing.T) {
	w := newWorld(t)
	w.run(2)
	off := w.event(0, "EU", 77)
	src := w.topics[partKey{ingest, "events", 0}][off]
	// The router dead-letters it without key, value or producer headers,
	// and attests the record it writes.
	in := AttestationInput{Value: Sum(nil), KeyNull: true, Decision: DeadLettered, Reason: ReasonTooLarge,
		RulesetVersion: 3, DestCluster: ingest, DestTopic: "residency.dead-letter", SrcTopic: "events", SrcOffset: off}
	hs := []Header{{"residency-reason", []byte(ReasonTooLarge)}, {"residency-ruleset-version", []byte("3")},
		{"residency-source-topic", []byte("events")}, {"residency-source-partition", []byte("0")},
		{"residency-source-offset", []byte(strconv.FormatInt(off, 10))}, {HeaderAttestation, w.attester.AppendTag(nil, &in)}}
	doff := w.produce(ingest, "residency.dead-letter", 0, Record{Headers: hs})
	l := Leaf{Kind: KindRoute, Time: w.time, Actor: "router-a", Src: Source{Topic: "events", Partition: 0, Offset: off},
		Decision: DeadLettered, Reason: ReasonTooLarge, Ruleset: w.rs,
		Dest: Destination{Cluster: ingest, Topic: "residency.dead-letter", Partition: 0, Offset: doff}}
	l.SetRecord(src.Key, src.Value)
	w.log(l)
	w.flush()
	w.integrate()
	expect(t, w.verify(VerifyConfig{}))
}

func TestVerifyHoldReleaseAndReplay(t *testing.T) {
	w := newWorld(t)
	w.run(2)
	// An EU event held while region eu is down, then released.
	off := w.event(1, "EU", 50)
	src := w.topics[partKey{ingest, "events", 1}][off]
	attest := func(in AttestationInput) []Header {
		return []Header{{"residency-jurisdiction", []byte("EU")}, {"residency-region", []byte("eu")},
			{"residency-ruleset-version", []byte("3")}, {"residency-source-topic", []byte("events")},
			{"residency-source-partition", []byte("1")}, {"residency-source-offset", []byte(strconv.FormatInt(off, 10))},
			{HeaderAttestation, w.attester.AppendTag(nil, &in)}}
	}
	in := AttestationInput{Value: Sum(src.Value), Key: Sum(src.Key), Decision: Held, Jurisdiction: "EU", Region: "eu",
		RulesetVersion: 3, DestCluster: ingest, DestTopic: "residency.hold", SrcTopic: "events", SrcPartition: 1, SrcOffset: off}
	hoff := w.produce(ingest, "residency.hold", 0, Record{Key: src.Key, Value: src.Value, Headers: attest(in)})
	held := Leaf{Kind: KindRoute, Time: w.time, Actor: "router-a", Src: Source{Topic: "events", Partition: 1, Offset: off},
		Decision: Held, Jurisdiction: "EU", Region: "eu", Ruleset: w.rs,
		Dest: Destination{Cluster: ingest, Topic: "residency.hold", Partition: 0, Offset: hoff}}
	held.SetRecord(src.Key, src.Value)
	w.log(held)
	in.Decision, in.DestCluster, in.DestTopic = Routed, "b", "residency.eu"
	roff := w.produce("b", "residency.eu", 1, Record{Key: src.Key, Value: src.Value, Headers: attest(in)})
	rel := held
	rel.Src = Source{Cluster: ingest, Topic: "residency.hold", Partition: 0, Offset: hoff}
	rel.Decision, rel.Dest = Released, Destination{Cluster: "b", Topic: "residency.eu", Partition: 1, Offset: roff}
	w.log(rel)
	// A quarantined event replayed after a fix, to the US pinned topic.
	qoff := w.event(0, "ZZ", 51)
	w.route(0, qoff)
	q := w.batch[len(w.batch)-1]
	qrec := w.topics[partKey{q.Dest.Cluster, q.Dest.Topic, q.Dest.Partition}][q.Dest.Offset]
	in = AttestationInput{Value: q.Value, Key: q.Key, Decision: Routed, Jurisdiction: "US", Region: "us", RulesetVersion: 3,
		DestCluster: "a", DestTopic: "residency.us", SrcTopic: "events", SrcPartition: 0, SrcOffset: qoff}
	hs := []Header{{"residency-jurisdiction", []byte("US")}, {"residency-region", []byte("us")},
		{"residency-ruleset-version", []byte("3")}, {"residency-source-topic", []byte("events")},
		{"residency-source-partition", []byte("0")}, {"residency-source-offset", []byte(strconv.FormatInt(qoff, 10))},
		{HeaderAttestation, w.attester.AppendTag(nil, &in)}}
	poff := w.produce("a", "residency.us", 0, Record{Key: qrec.Key, Value: qrec.Value, Headers: hs})
	rp := Leaf{Kind: KindReplay, Time: w.time, Actor: "replay:fix-1",
		Src:      Source{Cluster: ingest, Topic: q.Dest.Topic, Partition: q.Dest.Partition, Offset: q.Dest.Offset},
		Decision: Routed, DecidedBy: "pin", Jurisdiction: "US", Region: "us", Ruleset: w.rs,
		Dest: Destination{Cluster: "a", Topic: "residency.us", Partition: 0, Offset: poff}}
	rp.SetRecord(qrec.Key, qrec.Value)
	w.log(rp)
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if r.Counts["(held)"] == nil || r.Counts["(held)"].Events != 1 || r.Counts["(held)"].Records != 1 {
		t.Fatalf("held counts %+v", r.Counts["(held)"])
	}
}

func TestVerifyDecisionChangedAndWindow(t *testing.T) {
	w := newWorld(t)
	off := w.event(0, "EU", 1)
	w.route(0, off)
	w.flush()
	// A new ruleset version (same policy) before the offset was committed:
	// routed again under it.
	content2 := "jurisdictions: [US, EU] # v4\n"
	rs2 := RulesetRef{Version: 4, Digest: Sum([]byte(content2))}
	w.log(Leaf{Kind: KindRuleset, Time: w.time, Actor: "router-b", Ruleset: rs2, Policy: w.policy, Content: content2})
	w.rs = rs2
	w.route(0, off)
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if got := codes(r.Notes); !slices.Equal(got, []string{"decision_changed"}) {
		t.Fatalf("notes %v", got)
	}
	// A record dropped before the window is not required any more.
	k := partKey{"b", "residency.eu", 0}
	w.drop(k, 0)
	expect(t, w.verify(VerifyConfig{}), "missing_record")
	expect(t, w.verify(VerifyConfig{Since: w.time + 1}))
}

func TestVerifyErasureIsANote(t *testing.T) {
	pz, _ := NewPseudonymizer(bytes.Repeat([]byte("s"), 32))
	// The sink leaf carries the subject; the user's row is erased
	// afterwards.
	w2 := newWorld(t)
	off := w2.event(0, "US", 0)
	w2.route(0, off)
	w2.flush()
	w2.sink("us-postgres", "us")
	for i := range w2.batch {
		w2.batch[i].Subject = pz.Subject([]byte("user-0"))
	}
	w2.flush()
	w2.rows["us-postgres"] = nil
	w2.log(Leaf{Kind: KindErasure, Time: w2.time + 1, Actor: "erase", Subject: pz.Subject([]byte("user-0")),
		Decision: Erased, Dest: Destination{Store: "us-postgres"}, Count: 1})
	w2.flush()
	w2.integrate()
	r := w2.verify(VerifyConfig{})
	expect(t, r)
	if got := codes(r.Notes); !slices.Equal(got, []string{"erased"}) {
		t.Fatalf("notes %v", got)
	}
}

func TestVerifyCompletenessAgainstIngestRecords(t *testing.T) {
	w := newWorld(t)
	w.run(5)
	// A leaf that lies about the record it decided on.
	off := w.event(0, "EU", 90)
	w.route(0, off)
	w.batch[len(w.batch)-1].Value = Sum([]byte("another event"))
	w.batch[len(w.batch)-1].Dest.Offset = 999 // its record is not where it says either
	w.flush()
	w.integrate()
	expectHas(t, w.verify(VerifyConfig{}), "record_mismatch")

	// Offsets without a record: with a leaf (purged after routing) fine;
	// without one a missing_leaf, or a gap note when gaps are allowed.
	w2 := newWorld(t)
	w2.run(3)
	k := partKey{ingest, "events", 1}
	w2.drop(k, 0)
	expect(t, w2.verify(VerifyConfig{}))
	w2.event(1, "US", 100) // never routed
	w2.drop(k, int64(len(w2.topics[k])-1))
	expect(t, w2.verify(VerifyConfig{}), "missing_leaf")
	r := w2.verify(VerifyConfig{AllowGaps: true})
	expect(t, r)
	if got := codes(r.Notes); !slices.Equal(got, []string{"gap"}) {
		t.Fatalf("notes %v", got)
	}
}

// TestVerifyReplayWithoutCoordinates: replay's leaves name the destination
// topic but not the partition and offset (-1: its publishers do not report
// them). The record replay wrote matches its leaf by topic, value and key,
// and the row a sink stored from it matches too; a byte-for-byte copy of
// it in the same topic is still unlogged_record (each leaf explains one
// record).
func TestVerifyReplayWithoutCoordinates(t *testing.T) {
	w := newWorld(t)
	w.run(2)
	qoff := w.event(0, "ZZ", 51)
	w.route(0, qoff)
	q := w.batch[len(w.batch)-1]
	qrec := w.topics[partKey{q.Dest.Cluster, q.Dest.Topic, q.Dest.Partition}][q.Dest.Offset]
	in := AttestationInput{Value: q.Value, Key: q.Key, Decision: Routed, Jurisdiction: "US", Region: "us", RulesetVersion: 3,
		DestCluster: "a", DestTopic: "residency.us", SrcTopic: "events", SrcPartition: 0, SrcOffset: qoff}
	hs := []Header{{"residency-jurisdiction", []byte("US")}, {"residency-region", []byte("us")},
		{"residency-ruleset-version", []byte("3")}, {"residency-source-topic", []byte("events")},
		{"residency-source-partition", []byte("0")}, {"residency-source-offset", []byte(strconv.FormatInt(qoff, 10))},
		{HeaderAttestation, w.attester.AppendTag(nil, &in)}}
	rec := Record{Key: qrec.Key, Value: qrec.Value, Headers: hs}
	poff := w.produce("a", "residency.us", 1, rec)
	rp := Leaf{Kind: KindReplay, Time: w.time, Actor: "replay:fix-1",
		Src:      Source{Cluster: ingest, Topic: q.Dest.Topic, Partition: q.Dest.Partition, Offset: q.Dest.Offset},
		Decision: Routed, DecidedBy: "country", Jurisdiction: "US", Region: "us", Ruleset: w.rs,
		Dest: Destination{Cluster: "a", Topic: "residency.us", Partition: -1, Offset: -1}}
	rp.SetRecord(qrec.Key, qrec.Value)
	w.log(rp)
	// The sink stores it.
	sw := Leaf{Kind: KindSinkWrite, Time: w.time, Actor: "sink:us-postgres", Src: Source{Cluster: "a", Topic: "residency.us", Partition: 1, Offset: poff},
		Decision: Written, Jurisdiction: "US", Region: "us", Ruleset: w.rs, Dest: Destination{Store: "us-postgres"}}
	sw.SetRecord(qrec.Key, qrec.Value)
	w.log(sw)
	w.rows["us-postgres"] = append(w.rows["us-postgres"], storeRow("residency.us", 1, poff, qrec.Value, "us", "US"))
	w.flush()
	w.integrate()
	expect(t, w.verify(VerifyConfig{}))
	// A copy of the replayed record, headers and all.
	w.produce("a", "residency.us", 0, rec)
	expect(t, w.verify(VerifyConfig{}), "unlogged_record")
}

// TestVerifyCrashCopyIsANote: a router killed after writing a record and
// before its leaf was appended routes the event again; the first copy,
// attested and naming a source offset whose leaf wrote the same record to
// the same topic, is the note duplicate_record, also when a sink stored
// that copy. A copy with another value (headers copied) is still a
// finding.
func TestVerifyCrashCopyIsANote(t *testing.T) {
	w := newWorld(t)
	w.run(2)
	off := w.event(0, "US", 60)
	w.route(0, off)
	w.batch = w.batch[:len(w.batch)-1] // killed before the ledger appended it
	w.route(0, off)
	w.flush()
	w.sink("us-postgres", "us")
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if !slices.ContainsFunc(r.Notes, func(f Finding) bool { return f.Code == CodeDuplicateRecord }) {
		t.Fatalf("no duplicate_record note: %+v", r.Notes)
	}
	// The same headers on another value: bad attestation, unlogged.
	k := partKey{"a", "residency.us", 0}
	first := w.topics[k][len(w.topics[k])-1]
	w.produce("a", "residency.us", 0, Record{Key: first.Key, Value: []byte("forged"), Headers: first.Headers})
	expect(t, w.verify(VerifyConfig{}), "bad_attestation", "unlogged_record")
}

// TestVerifyDeadLetterCrashCopyIsANote: a dead-lettered record carries no
// ruleset version header; its copy written before a crash is explained
// too.
func TestVerifyDeadLetterCrashCopyIsANote(t *testing.T) {
	w := newWorld(t)
	w.run(1)
	off := w.produce(ingest, "events", 1, Record{Key: []byte("k"), Value: []byte("not avro")})
	src := w.topics[partKey{ingest, "events", 1}][off]
	l := Leaf{Kind: KindRoute, Time: w.time, Actor: "router-a", Src: Source{Topic: "events", Partition: 1, Offset: off},
		Decision: DeadLettered, Reason: "undecodable", Ruleset: w.rs}
	l.SetRecord(src.Key, src.Value)
	hs := []Header{{"residency-reason", []byte("undecodable")}, {"residency-source-topic", []byte("events")},
		{"residency-source-partition", []byte("1")}, {"residency-source-offset", []byte(strconv.FormatInt(off, 10))}}
	in := AttestationInputOf(ingest, "residency.dead-letter", RoleDeadLetter, src.Key, src.Value, hs)
	hs = append(hs, Header{HeaderAttestation, w.attester.AppendTag(nil, &in)})
	w.produce(ingest, "residency.dead-letter", 0, Record{Key: src.Key, Value: src.Value, Headers: hs}) // killed: no leaf
	doff := w.produce(ingest, "residency.dead-letter", 0, Record{Key: src.Key, Value: src.Value, Headers: hs})
	l.Dest = Destination{Cluster: ingest, Topic: "residency.dead-letter", Partition: 0, Offset: doff}
	w.log(l)
	w.flush()
	w.integrate()
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if !slices.ContainsFunc(r.Notes, func(f Finding) bool { return f.Code == CodeDuplicateRecord && f.Topic == "residency.dead-letter" }) {
		t.Fatalf("no duplicate_record note: %+v", r.Notes)
	}
}

// TestVerifyAlteredLeafWithPreviousCheckpoint: a leaf altered in the bucket
// is altered_log even when the reviewer gives the previous checkpoint (here
// the very checkpoint in the bucket, which the log trivially extends), and
// the report does not claim the log extends it.
func TestVerifyAlteredLeafWithPreviousCheckpoint(t *testing.T) {
	w := newWorld(t)
	w.run(20)
	prev, _ := w.store.Get(context.Background(), CheckpointPath)
	path := w.firstBundle()
	b, _ := w.store.Get(context.Background(), path)
	nb := bytes.Replace(b, []byte(`"jurisdiction":"EU","region":"eu"`), []byte(`"jurisdiction":"EU","region":"us"`), 1)
	if bytes.Equal(b, nb) {
		t.Fatal("nothing altered")
	}
	w.store.Put(context.Background(), path, nb)
	r := w.verify(VerifyConfig{Previous: prev})
	expectHas(t, r, "altered_log")
	if slices.Contains(codes(r.Findings), "checkpoint_not_extending") {
		t.Errorf("an altered leaf reported as checkpoint_not_extending: %v", codes(r.Findings))
	}
	if r.Previous != nil {
		t.Errorf("the report says the altered log extends the previous checkpoint: %+v", r.Previous)
	}
}

// TestVerifyNotExtendingReportsNoPrevious: a checkpoint that does not
// extend the previous one is not shown as extending it.
func TestVerifyNotExtendingReportsNoPrevious(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	prev, _ := w.store.Get(context.Background(), CheckpointPath)
	w2 := newWorld(t)
	w2.run(12)
	r := w2.verify(VerifyConfig{Previous: prev})
	expect(t, r, "checkpoint_not_extending")
	if r.Previous != nil {
		t.Errorf("report.Previous = %+v for a checkpoint that does not extend it", r.Previous)
	}
}

// TestVerifyTransactionMarkersAndAborted: an offset the source reports as
// a transaction marker needs no leaf, in an ingest topic or any other, and
// is never judged as a record (the Kafka source handed markers over as
// records: every one was a missing_leaf, even with AllowGaps); an aborted
// record read read_committed needs no leaf either; a real record still
// does, and a record no leaf wrote in a pinned topic is still unlogged.
func TestVerifyTransactionMarkersAndAborted(t *testing.T) {
	w := newWorld(t)
	w.run(3)
	// A marker's control record, as a reader that does not tell them
	// apart would hand it over (key: version and type; value: version,
	// coordinator epoch).
	marker := Record{Kind: KindTxnMarker, Key: []byte{0, 0, 0, 1}, Value: []byte{0, 0, 0, 0, 0, 0}}
	w.produce(ingest, "events", 0, marker)
	w.route(0, w.event(0, "US", 200))
	w.produce(ingest, "events", 0, marker)
	w.produce(ingest, "events", 1, Record{Kind: KindAborted})
	w.produce(ingest, "events", 1, marker)
	w.produce("a", "residency.us", 0, marker)
	w.flush()
	w.integrate()
	for _, gaps := range []bool{false, true} {
		r := w.verify(VerifyConfig{AllowGaps: gaps})
		expect(t, r)
		if len(r.Notes) != 0 {
			t.Fatalf("AllowGaps %v: notes %v, want none", gaps, codes(r.Notes))
		}
		if r.Checked.TxnMarkers != 3 || r.Checked.Aborted != 1 {
			t.Fatalf("AllowGaps %v: checked %d markers, %d aborted; want 3 and 1", gaps, r.Checked.TxnMarkers, r.Checked.Aborted)
		}
	}
	var b bytes.Buffer
	if err := w.verify(VerifyConfig{}).WriteTable(&b); err != nil || !strings.Contains(b.String(), "(3 transaction markers, 1 aborted records)") {
		t.Fatalf("report without the markers and aborted records counted: %v\n%s", err, b.String())
	}
	// A data record without its leaf is still missing one, and a record
	// no leaf wrote into a pinned topic is still unlogged.
	w.event(1, "EU", 201)
	expect(t, w.verify(VerifyConfig{}), "missing_leaf")
	w2 := newWorld(t)
	w2.run(2)
	foreign := w2.produce("a", "residency.us", 1, Record{Key: []byte("k"), Value: []byte("written by another, transactionally")})
	w2.produce("a", "residency.us", 1, marker)
	r2 := w2.verify(VerifyConfig{})
	expect(t, r2, "unlogged_record", "bad_attestation")
	for _, f := range r2.Findings {
		if f.Offset != foreign {
			t.Fatalf("finding %s at %s/%d@%d, want only the foreign record's (%d)", f.Code, f.Topic, f.Partition, f.Offset, foreign)
		}
	}
	// A leaf for an aborted record (a router that read it read_uncommitted
	// before) counts as the event it decided on.
	w3 := newWorld(t)
	w3.run(1)
	before := w3.verify(VerifyConfig{}).Counts["us"].Events
	off := w3.event(0, "US", 300)
	w3.route(0, off)
	w3.topics[partKey{ingest, "events", 0}][off] = Record{Partition: 0, Offset: off, Kind: KindAborted}
	w3.flush()
	w3.integrate()
	r := w3.verify(VerifyConfig{})
	expect(t, r)
	if r.Counts["us"].Events != before+1 {
		t.Fatalf("us events %d, want %d (the aborted record's leaf counted)", r.Counts["us"].Events, before+1)
	}
}

// findingsOf returns the findings (or notes) with code.
func findingsOf(fs []Finding, code Code) []Finding {
	var out []Finding
	for _, f := range fs {
		if f.Code == code {
			out = append(out, f)
		}
	}
	return out
}

// TestVerifySinkRefusedInjection (D8): a record injected into a pinned
// topic without a valid attestation, refused by the sink
// (sink_bad_attestation) and quarantined with its refusal leaf, is
// reported where it was written (unlogged_record, bad_attestation in the
// pinned topic), and its quarantined copy only as the note
// refused_unattested. A quarantined copy whose attestation broke although
// its sink refused it for another reason stays bad_attestation.
func TestVerifySinkRefusedInjection(t *testing.T) {
	w := newWorld(t)
	w.run(4)
	k := partKey{"b", "residency.eu", 0}
	real := w.topics[k][0]
	injected := Record{Key: real.Key, Value: []byte("event 900 of EU"), Headers: real.Headers}
	ioff := w.produce("b", "residency.eu", 0, injected)
	refuse := func(rec Record, off int64, reason string) {
		qhs := append(slices.Clip(rec.Headers), Header{"residency-reason", []byte(reason)},
			Header{"residency-error", []byte("refused")}, Header{"residency-sink-store", []byte("eu-objectstore")})
		qoff := w.produce(ingest, "residency.sink-quarantine", 0, Record{Key: rec.Key, Value: rec.Value, Headers: qhs})
		l := Leaf{Kind: KindSinkRefusal, Time: w.time, Actor: "sink:eu-objectstore",
			Src:      Source{Cluster: "b", Topic: "residency.eu", Partition: 0, Offset: off},
			Decision: Refused, Reason: reason, Jurisdiction: "EU", Region: "eu", Ruleset: w.rs,
			Dest: Destination{Cluster: ingest, Topic: "residency.sink-quarantine", Partition: 0, Offset: qoff}}
		l.SetRecord(rec.Key, rec.Value)
		w.log(l)
		w.flush()
		w.integrate()
	}
	refuse(injected, ioff, ReasonSinkBadAttestation)
	r := w.verify(VerifyConfig{})
	expect(t, r, "unlogged_record", "bad_attestation")
	for _, f := range r.Findings {
		if f.Cluster != "b" || f.Topic != "residency.eu" || f.Offset != ioff {
			t.Fatalf("%s at %s, want only the injection in the pinned topic", f.Code, f.where())
		}
	}
	n := findingsOf(r.Notes, CodeRefusedUnattested)
	if len(n) != 1 || n[0].Topic != "residency.sink-quarantine" || n[0].Leaf < 0 {
		t.Fatalf("notes %+v, want one refused_unattested on the quarantined copy", r.Notes)
	}
	// Refused for another reason, its copy's attestation broken (a header
	// changed in the sink quarantine topic): still a finding.
	w2 := newWorld(t)
	w2.run(4)
	w = w2
	rec := w.topics[k][0]
	changed := Record{Key: rec.Key, Value: rec.Value, Headers: append(slices.Clip(rec.Headers), Header{"residency-region", []byte("us")})}
	refuse(changed, rec.Offset, "sink_region_moved")
	r = w.verify(VerifyConfig{})
	expect(t, r, "bad_attestation")
	if f := r.Findings[0]; f.Topic != "residency.sink-quarantine" {
		t.Fatalf("bad_attestation at %s", f.where())
	}
}

// TestVerifyProgress (D10): progress is reported at every multiple of the
// interval, never at 0, for every stage, and the counts are the ones
// checked so far.
func TestVerifyProgress(t *testing.T) {
	defer func(n int64) { progressEvery = n }(progressEvery)
	progressEvery = 10
	w := newWorld(t)
	w.run(30)
	calls := map[string][]int64{}
	r := w.verify(VerifyConfig{Progress: func(stage string, done int64) { calls[stage] = append(calls[stage], done) }})
	want := map[string]int64{"log": r.Checkpoint.Size, "ingest": r.Checked.Offsets, "records": r.Checked.Records, "rows": r.Checked.Rows}
	for stage, total := range want {
		var exp []int64
		for n := int64(10); n <= total; n += 10 {
			exp = append(exp, n)
		}
		if !slices.Equal(calls[stage], exp) {
			t.Errorf("%s: progress %v, want %v (of %d)", stage, calls[stage], exp, total)
		}
	}
	// Offsets checked without their records (no record source, or a gap
	// in the records) count as much as the others.
	var ingestCalls []int64
	v, err := VerifyLog(context.Background(), w.store, VerifyConfig{LogKey: testLogPub, IngestCluster: ingest,
		Progress: func(stage string, done int64) {
			if stage == "ingest" {
				ingestCalls = append(ingestCalls, done)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyCompleteness(context.Background(), []TopicRange{{Cluster: ingest, Topic: "events", Role: RoleIngest, Partition: 0, From: 0, To: 25}}, nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ingestCalls, []int64{10, 20}) {
		t.Errorf("ingest progress without records %v, want [10 20]", ingestCalls)
	}
}
