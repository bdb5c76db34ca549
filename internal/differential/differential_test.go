package differential

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/sink/sinktest"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

var (
	seedFlag   = flag.Uint64("differential.seed", 1, "seed of TestDifferential's random events (0: from the clock, logged)")
	eventsFlag = flag.Int("differential.events", 1500, "random events per deployment in TestDifferential")
	writeSeeds = flag.Bool("differential.write-seeds", false, "rewrite the reason-* seeds of testdata/fuzz/FuzzDifferential")
)

func TestMain(m *testing.M) {
	// goavro allocates for a block count before reading the items; the
	// reference caps it as the router's walk does, so that a corrupted
	// count cannot exhaust memory. Every item of these schemas takes a
	// byte at least, so a count over the cap is more than any value holds.
	goavro.MaxBlockCount = schemas.MaxEmptyItems
	os.Exit(m.Run())
}

// memoryWhere sets deployments up in memory: topics are names, the schema
// registry an httptest server following the Confluent API.
func memoryWhere(t testing.TB) where {
	reg := sinktest.NewRegistry(t)
	return where{
		topic:       func(prefix, _ string) string { return prefix },
		register:    func(_, schema string) uint32 { return reg.Register(schema) },
		registryURL: reg.URL,
		dir:         t.TempDir(),
		ids:         map[uint32]*writerSchema{},
	}
}

// deployments are the deployments under test, in a fixed order (the
// fuzz inputs pick one by index).
func deployments(t testing.TB, w where) []*deployment {
	return []*deployment{canonicalDeployment(t, w), nestedDeployment(t, w)}
}

// TestDifferential routes random events (valid and corrupted, every
// framing and writer schema of both deployments, random keys and headers)
// through the router's pipeline in memory, in batches as the router does,
// and checks that the pipeline, explain, the sink's re-derivation and the
// reference reading agree on each, and that the router's records hold the
// events byte for byte; then real sinks drain the pinned topics and must
// store every routed event and refuse none.
func TestDifferential(t *testing.T) {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (-differential.seed)", seed)
	r := rand.New(rand.NewPCG(seed, 12))
	ctx := context.Background()
	deps := deployments(t, memoryWhere(t))
	reasons := map[string]int{}
	for i, d := range deps {
		l, err := newLegs(ctx, d, t.Errorf)
		if err != nil {
			t.Fatal(err)
		}
		ins := everyReason(t, i, d)
		for range *eventsFlag {
			ins = append(ins, randomInput(r, i, d, false))
		}
		var routed []stream.Message
		for start := 0; start < len(ins); start += 50 {
			batch := ins[start:min(start+50, len(ins))]
			msgs := make([]stream.Message, len(batch))
			for k := range batch {
				msgs[k] = batch[k].message(int64(start + k))
			}
			ds, outs, err := l.routeInMemory(slices.Clone(msgs))
			if err != nil {
				t.Fatal(err)
			}
			for k := range batch {
				l.compare(batch[k].what, msgs[k], &ds[k], outs[k])
				reasons[reasonOf(ds[k])]++
				if ds[k].Outcome == router.Routed {
					routed = append(routed, outs[k])
				}
			}
		}
		runSinks(t, l, routed)
	}
	t.Logf("decisions: %v", reasons)
	for _, want := range allReasons() {
		if reasons[want] == 0 {
			t.Errorf("no event was %s: the test does not cover it", want)
		}
	}
}

// reasonOf is a decision's reason, or "routed".
func reasonOf(d router.Decision) string {
	if d.Outcome == router.Routed {
		return "routed"
	}
	return d.Reason
}

// allReasons are every reason the router gives, and "routed".
func allReasons() []string {
	return append(schemas.Reasons(), router.ReasonNoCountry, router.ReasonUnknownCountry, router.ReasonNoRule, "routed")
}

// everyReason is one event of deployment d (index dep) per reason the
// router gives, in its single-object topic, written with its first
// writer schema (the nested deployment: n2, whose account is not
// nullable).
func everyReason(t testing.TB, dep int, d *deployment) []input {
	t.Helper()
	ts := d.topics[0]
	w := ts.writers[0]
	if d.name == "nested" {
		w = ts.writers[1]
	}
	r := rand.New(rand.NewPCG(7, 7))
	event := func(user string, country any, big bool) []byte {
		g := &gen{r: r, user: user, country: country, big: big, mark: true}
		body, err := w.codec.BinaryFromNative(nil, w.gen(g))
		if err != nil {
			t.Fatal(err)
		}
		return schemas.AppendSingleObject(nil, w.fp, body)
	}
	country := func(c string) any {
		if strings.HasPrefix(w.label, "n") {
			return nil // n2's enum: any symbol
		}
		return c
	}
	ok := event("u-1", "US", false)
	in := func(reason string, key []byte, value []byte, hs ...stream.Header) input {
		return input{dep: dep, d: d, topic: ts, key: key, value: value, headers: hs, what: "every reason: " + reason}
	}
	bad := slices.Clone(ok)
	i := strings.Index(string(bad), sessionMark)
	bad[i-2] = 0x04 // union index 2 of ["null","string"]
	unknown := slices.Clone(ok)
	unknown[5] ^= 0xff
	magic := slices.Clone(ok)
	magic[0] = 0
	out := []input{
		in("routed", []byte("k-u-1"), ok, stream.Header{Key: "trace", Value: []byte("t-1")}, stream.Header{Key: "h", Value: nil}, stream.Header{Key: "h", Value: []byte{}}),
		in("empty_value", []byte{}, []byte{}),
		in("too_large", nil, event("u-1", "US", true)),
		in("bad_magic", []byte("k"), magic),
		in("unknown_schema", nil, unknown),
		in("truncated", nil, ok[:len(ok)-3]),
		in("trailing_bytes", nil, append(slices.Clone(ok), 0)),
		in("corrupt", nil, bad),
		in("no_rule", nil, event("u-pin-gone", "US", false)),
	}
	if d.name != "nested" {
		out = append(out,
			in("no_country", nil, event("u-1", nil, false), stream.Header{Key: router.HeaderRegion, Value: []byte("forged")}),
			in("unknown_country", nil, event("u-2", country("ZZ"), false)))
	} else {
		out = append(out, in("no_country", nil, schemas.AppendSingleObject(nil, d.topics[0].writers[0].fp, mustEncode(t, d.topics[0].writers[0], map[string]any{
			"event_id": "e", "occurred_at": time.UnixMilli(1), "session_id": nil, "account": nil, "tags": []any{}}))))
	}
	return out
}

func mustEncode(t testing.TB, w *writerSchema, native map[string]any) []byte {
	t.Helper()
	b, err := w.codec.BinaryFromNative(nil, native)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDifferential drives the comparison of TestDifferential with the
// fuzzer: dep and topic pick a deployment and one of its ingest topics,
// key is the key (null when keyNull), hdrs encodes the producer headers
// (see decodeHeaders) and value is the value. Each input is routed alone
// by the router's pipeline in memory, decided by explain's code, re-read
// by the sink's and by the reference; all must agree and the router's
// record must hold the input byte for byte. The corpus
// (testdata/fuzz/FuzzDifferential) holds an input for every reason the
// router gives (reason-*, see TestFuzzCorpusHasEveryReason); `go test`
// runs it. Run the fuzzer with
//
//	go test ./internal/differential -run '^$' -fuzz FuzzDifferential -fuzztime 5m
func FuzzDifferential(f *testing.F) {
	deps := deployments(f, memoryWhere(f))
	ls := make([]*legs, len(deps))
	for i, d := range deps {
		var err error
		if ls[i], err = newLegs(context.Background(), d, f.Errorf); err != nil {
			f.Fatal(err)
		}
	}
	// More seeds than the corpus files: a few random events per
	// deployment.
	r := rand.New(rand.NewPCG(3, 4))
	for i, d := range deps {
		for range 8 {
			addInput(f, randomInput(r, i, d, false))
		}
	}
	var mu sync.Mutex
	var offset int64
	f.Fuzz(func(t *testing.T, dep, topic uint8, key []byte, keyNull bool, hdrs, value []byte) {
		mu.Lock()
		defer mu.Unlock()
		l := ls[int(dep)%len(ls)]
		ts := l.d.topics[int(topic)%len(l.d.topics)]
		if keyNull {
			key = nil
		} else if key == nil {
			key = []byte{}
		}
		offset++
		msg := stream.Message{Topic: ts.name, Offset: offset, Key: key, Value: value, Headers: decodeHeaders(hdrs)}
		l.errs = t.Errorf
		ds, outs, err := l.routeInMemory([]stream.Message{msg})
		if err != nil {
			t.Fatal(err)
		}
		l.compare("fuzz input", msg, &ds[0], outs[0])
	})
}

// fuzzArgs are in's arguments of FuzzDifferential.
func fuzzArgs(in input, topic int) []any {
	return []any{uint8(in.dep), uint8(topic), slices.Clone(in.key), in.key == nil, encodeHeaders(in.headers), in.value}
}

// addInput adds in to f's seeds.
func addInput(f *testing.F, in input) {
	f.Add(fuzzArgs(in, topicIndex(in))...)
}

func topicIndex(in input) int {
	for i, ts := range in.d.topics {
		if ts == in.topic {
			return i
		}
	}
	panic("topic of no deployment")
}

// decodeHeaders reads producer headers from the fuzzer's bytes: each
// header is a name length (mod 33), the name, then 0xff for a null value
// or a value length and the value (cut at the end of b).
func decodeHeaders(b []byte) []stream.Header {
	var hs []stream.Header
	for len(b) > 0 {
		n := int(b[0]) % 33
		b = b[1:]
		if n > len(b) {
			break
		}
		h := stream.Header{Key: string(b[:n])}
		b = b[n:]
		if len(b) > 0 {
			tag := b[0]
			b = b[1:]
			if tag != 0xff {
				m := min(int(tag), len(b))
				h.Value, b = slices.Clone(b[:m]), b[m:]
			}
		}
		hs = append(hs, h)
	}
	return hs
}

// encodeHeaders is the inverse of decodeHeaders for names of up to 32
// bytes and values of up to 254; longer ones are cut.
func encodeHeaders(hs []stream.Header) []byte {
	var b []byte
	for _, h := range hs {
		k := h.Key[:min(len(h.Key), 32)]
		b = append(b, byte(len(k)))
		b = append(b, k...)
		if h.Value == nil {
			b = append(b, 0xff)
			continue
		}
		v := h.Value[:min(len(h.Value), 254)]
		b = append(b, byte(len(v)))
		b = append(b, v...)
	}
	return b
}

// corpusDir holds the fuzz corpus.
var corpusDir = filepath.Join("testdata", "fuzz", "FuzzDifferential")

// TestFuzzCorpusHasEveryReason: the fuzz corpus holds, for every reason
// the router gives (and "routed"), a seed named reason-REASON, and the
// router gives each its reason. With -differential.write-seeds it writes
// them from everyReason first.
func TestFuzzCorpusHasEveryReason(t *testing.T) {
	deps := deployments(t, memoryWhere(t))
	d := deps[0]
	if *writeSeeds {
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, in := range everyReason(t, 0, d) {
			reason := strings.TrimPrefix(in.what, "every reason: ")
			if err := os.WriteFile(filepath.Join(corpusDir, "reason-"+reason), marshalCorpus(fuzzArgs(in, topicIndex(in))), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	l, err := newLegs(context.Background(), d, t.Errorf)
	if err != nil {
		t.Fatal(err)
	}
	for _, reason := range allReasons() {
		p := filepath.Join(corpusDir, "reason-"+reason)
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("no seed for %s: %v", reason, err)
			continue
		}
		args, err := unmarshalCorpus(raw)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		ts := deps[int(args.dep)%len(deps)].topics[int(args.topic)%len(deps[int(args.dep)%len(deps)].topics)]
		key := args.key
		if args.keyNull {
			key = nil
		}
		msg := stream.Message{Topic: ts.name, Key: key, Value: args.value, Headers: decodeHeaders(args.hdrs)}
		ds, outs, err := l.routeInMemory([]stream.Message{msg})
		if err != nil {
			t.Fatal(err)
		}
		if got := reasonOf(ds[0]); got != reason {
			t.Errorf("%s: the router says %s", p, got)
		}
		l.compare(p, msg, &ds[0], outs[0])
	}
}

// corpusArgs are the arguments of a FuzzDifferential corpus file.
type corpusArgs struct {
	dep, topic  uint8
	key         []byte
	keyNull     bool
	hdrs, value []byte
}

// marshalCorpus writes FuzzDifferential's arguments as a corpus file
// ("go test fuzz v1").
func marshalCorpus(args []any) []byte {
	var b strings.Builder
	b.WriteString("go test fuzz v1\n")
	for _, a := range args {
		switch v := a.(type) {
		case uint8:
			fmt.Fprintf(&b, "byte(%q)\n", v)
		case bool:
			fmt.Fprintf(&b, "bool(%v)\n", v)
		case []byte:
			fmt.Fprintf(&b, "[]byte(%q)\n", v)
		}
	}
	return []byte(b.String())
}

// unmarshalCorpus reads a corpus file of FuzzDifferential.
func unmarshalCorpus(raw []byte) (corpusArgs, error) {
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	var a corpusArgs
	if len(lines) != 7 || lines[0] != "go test fuzz v1" {
		return a, fmt.Errorf("not a go test fuzz v1 file of 6 arguments")
	}
	unq := func(line, prefix string) (string, error) {
		if !strings.HasPrefix(line, prefix+"(") || !strings.HasSuffix(line, ")") {
			return "", fmt.Errorf("%q is not %s(...)", line, prefix)
		}
		return strings.TrimSuffix(strings.TrimPrefix(line, prefix+"("), ")"), nil
	}
	var err error
	byteArg := func(line string) uint8 {
		s, e := unq(line, "byte")
		if e != nil {
			err = e
			return 0
		}
		c, _, _, e := strconv.UnquoteChar(strings.Trim(s, "'"), '\'')
		if e != nil {
			err = e
		}
		return uint8(c)
	}
	bytesArg := func(line string) []byte {
		s, e := unq(line, "[]byte")
		if e != nil {
			err = e
			return nil
		}
		v, e := strconv.Unquote(s)
		if e != nil {
			err = e
		}
		return []byte(v)
	}
	a.dep, a.topic = byteArg(lines[1]), byteArg(lines[2])
	a.key = bytesArg(lines[3])
	a.keyNull = lines[4] == "bool(true)"
	a.hdrs, a.value = bytesArg(lines[5]), bytesArg(lines[6])
	return a, err
}

// runSinks publishes the records the router routed to the pinned topics
// of an in-memory broker and runs a sink per region that routes (the
// store diff-store is approved for us and eu), as `residency sink` runs
// one: every routed record must be stored, with the region and
// jurisdiction of its headers, and none quarantined.
func runSinks(t *testing.T, l *legs, routed []stream.Message) {
	t.Helper()
	d := l.d
	b := streamtest.NewBroker()
	want := map[string][]stream.Message{}
	for _, m := range routed {
		want[m.Topic] = append(want[m.Topic], m)
	}
	for region, topic := range d.pinned {
		b.CreateTopic(topic, 1)
		b.CreateTopic("sink-quarantine-"+region, 1)
		if err := b.Publisher().Publish(context.Background(), want[topic]...); err != nil {
			t.Fatal(err)
		}
	}
	for region, topic := range d.pinned {
		store := &memStore{}
		s, err := sink.New(sink.Config{Store: "diff-store", Region: region, Topic: topic, QuarantineTopic: "sink-quarantine-" + region,
			Pins: l.pins, BatchSize: 100, BatchTimeout: 10 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)},
			b.Subscriber("sink-"+region, topic), store, b.Publisher(), sinktest.NewRules(d.rs), l.sinkDec)
		if err != nil {
			t.Fatal(err)
		}
		stop := testenv.Start(t, 30*time.Second, s.Run)
		n := len(want[topic])
		testenv.Eventually(t, 30*time.Second, fmt.Sprintf("the %s sink to take %d records", region, n), func() bool {
			return store.len()+len(b.Records("sink-quarantine-"+region)) >= n
		})
		if err := stop(); err != nil {
			t.Errorf("%s sink: %v", region, err)
		}
		for _, q := range b.Records("sink-quarantine-" + region) {
			reason, _ := router.HeaderValue(q.Headers, router.HeaderReason)
			why, _ := router.HeaderValue(q.Headers, router.HeaderError)
			t.Errorf("%s: the %s sink refuses a routed record: %s: %s", d.name, region, reason, why)
		}
		got := store.records()
		if len(got) != n {
			t.Errorf("%s: the %s sink stored %d records of %d", d.name, region, len(got), n)
		}
		for i, rec := range got {
			if i >= n {
				break
			}
			m := want[topic][i]
			jur, _ := router.HeaderValue(m.Headers, router.HeaderJurisdiction)
			if rec.Region != region || rec.Jurisdiction != string(jur) || !sameBytes(rec.Raw, m.Value) {
				t.Errorf("%s: the %s sink stored record %d as %s/%s (%d bytes), routed as %s/%s (%d bytes)", d.name, region, i,
					rec.Jurisdiction, rec.Region, len(rec.Raw), jur, region, len(m.Value))
			}
		}
	}
}

// memStore is a sink.Store in memory.
type memStore struct {
	mu   sync.Mutex
	recs []sink.Record
}

func (s *memStore) Write(_ context.Context, batch []sink.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, batch...)
	return nil
}

func (s *memStore) Close(context.Context) error { return nil }

func (s *memStore) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.recs)
}

func (s *memStore) records() []sink.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.recs)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Offset < out[j].Offset })
	return out
}
