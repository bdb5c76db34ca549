package erasure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// memKafka is an in-memory cluster: topics of partitions of records, the
// groups' commits and topic configs. It implements erasure.Admin and
// erasure.TopicReader.
type memKafka struct {
	mu      sync.Mutex
	topics  map[string][]*memPart
	commits map[string]map[string]map[int]int64 // group -> topic -> partition -> offset
	configs map[string]map[string]string
	deletes []string // "topic/partition<offset", in order
	failDel error
}

type memPart struct {
	logStart int64
	recs     []stream.Message // every record from offset 0; those below logStart are gone
}

func newMemKafka() *memKafka {
	return &memKafka{topics: map[string][]*memPart{}, commits: map[string]map[string]map[int]int64{}, configs: map[string]map[string]string{}}
}

func (k *memKafka) create(topic string, partitions int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ps := make([]*memPart, partitions)
	for i := range ps {
		ps[i] = &memPart{}
	}
	k.topics[topic] = ps
}

// produce appends a record; headers alternate name, value.
func (k *memKafka) produce(topic string, partition int, value string, at time.Time, headers ...string) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.topics[topic][partition]
	m := stream.Message{Topic: topic, Partition: partition, Offset: int64(len(p.recs)), Value: []byte(value), Time: at}
	for i := 0; i+1 < len(headers); i += 2 {
		m.Headers = append(m.Headers, stream.Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	p.recs = append(p.recs, m)
	return m.Offset
}

func (k *memKafka) commit(group, topic string, partition int, offset int64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.commits[group] == nil {
		k.commits[group] = map[string]map[int]int64{}
	}
	if k.commits[group][topic] == nil {
		k.commits[group][topic] = map[int]int64{}
	}
	k.commits[group][topic][partition] = offset
}

func (k *memKafka) logStart(topic string, partition int) int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.topics[topic][partition].logStart
}

func (k *memKafka) part(topic string) ([]*memPart, error) {
	ps, ok := k.topics[topic]
	if !ok {
		return nil, fmt.Errorf("topic %s: unknown", topic)
	}
	return ps, nil
}

func (k *memKafka) Watermarks(_ context.Context, topic string) (map[int]int64, map[int]int64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ps, err := k.part(topic)
	if err != nil {
		return nil, nil, err
	}
	low, high := map[int]int64{}, map[int]int64{}
	for i, p := range ps {
		low[i], high[i] = p.logStart, int64(len(p.recs))
	}
	return low, high, nil
}

func (k *memKafka) CommittedOffsets(_ context.Context, group, topic string) (map[int]int64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[int]int64{}
	for p, o := range k.commits[group][topic] {
		out[p] = o
	}
	return out, nil
}

func (k *memKafka) OffsetsAt(_ context.Context, topic string, t time.Time) (map[int]int64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	ps, err := k.part(topic)
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for i, p := range ps {
		out[i] = int64(len(p.recs))
		for _, m := range p.recs[p.logStart:] {
			if !m.Time.Before(t) {
				out[i] = m.Offset
				break
			}
		}
	}
	return out, nil
}

func (k *memKafka) DeleteRecords(_ context.Context, topic string, before map[int]int64) (map[int]int64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.failDel != nil {
		return nil, k.failDel
	}
	ps, err := k.part(topic)
	if err != nil {
		return nil, err
	}
	out := map[int]int64{}
	for _, p := range slices.Sorted(func(yield func(int) bool) {
		for p := range before {
			if !yield(p) {
				return
			}
		}
	}) {
		o := before[p]
		if o < 0 || o > int64(len(ps[p].recs)) {
			return out, fmt.Errorf("offset %d out of range", o)
		}
		ps[p].logStart = max(ps[p].logStart, o)
		out[p] = ps[p].logStart
		k.deletes = append(k.deletes, fmt.Sprintf("%s/%d<%d", topic, p, o))
	}
	return out, nil
}

func (k *memKafka) TopicConfig(_ context.Context, topic string) (map[string]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if c, ok := k.configs[topic]; ok {
		return c, nil
	}
	return map[string]string{"cleanup.policy": "delete", "retention.ms": "604800000", "segment.ms": "604800000"}, nil
}

func (k *memKafka) ReadRange(_ context.Context, topic string, partition int, start, end int64, batch int, fn func([]stream.Message) error) error {
	k.mu.Lock()
	ps, err := k.part(topic)
	if err != nil {
		k.mu.Unlock()
		return err
	}
	p := ps[partition]
	start = max(start, p.logStart)
	end = min(end, int64(len(p.recs)))
	var recs []stream.Message
	if start < end {
		recs = slices.Clone(p.recs[start:end])
	}
	k.mu.Unlock()
	for len(recs) > 0 {
		n := min(batch, len(recs))
		if err := fn(recs[:n]); err != nil {
			return err
		}
		recs = recs[n:]
	}
	return nil
}

func (k *memKafka) cluster() erasure.Cluster { return erasure.Cluster{Admin: k, Reader: k} }

// textEvents reads values "COUNTRY|USER" ("|USER" has no country); a value
// starting with "!" is unreadable.
type textEvents struct{}

func (textEvents) Fields(_ context.Context, _ erasure.Topic, m *stream.Message) (schemas.Fields, error) {
	if bytes.HasPrefix(m.Value, []byte("!")) {
		return schemas.Fields{}, schemas.ErrCorrupt
	}
	c, u, ok := bytes.Cut(m.Value, []byte("|"))
	if !ok {
		return schemas.Fields{}, schemas.ErrTruncated
	}
	return schemas.Fields{Country: c, HasCountry: len(c) > 0, UserID: u}, nil
}

// memStore is an in-memory store; afterErase, if set, runs after each
// Erase (a sink writing in between).
type memStore struct {
	mu         sync.Mutex
	rows       []erasure.Row
	fail       error
	afterErase func(s *memStore)
}

func (s *memStore) add(r erasure.Row) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rows = append(s.rows, r)
}

func (s *memStore) Erase(_ context.Context, user string) (int, error) {
	s.mu.Lock()
	if s.fail != nil {
		s.mu.Unlock()
		return 0, s.fail
	}
	n := len(s.rows)
	s.rows = slices.DeleteFunc(s.rows, func(r erasure.Row) bool { return r.UserID == user })
	n -= len(s.rows)
	hook := s.afterErase
	s.mu.Unlock()
	if hook != nil {
		hook(s)
	}
	return n, nil
}

func (s *memStore) Count(_ context.Context, user string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	n := 0
	for _, r := range s.rows {
		if r.UserID == user {
			n++
		}
	}
	return n, nil
}

func (s *memStore) Scan(_ context.Context, fn func(erasure.Row) error) error {
	s.mu.Lock()
	rows := slices.Clone(s.rows)
	s.mu.Unlock()
	for _, r := range rows {
		if err := fn(r); err != nil {
			return err
		}
	}
	return nil
}

func (s *memStore) users() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, r := range s.rows {
		out = append(out, r.UserID+":"+r.EventID)
	}
	return out
}

// row makes a stored row of user with the given country.
func row(id, user, country, region string) erasure.Row {
	ev := fmt.Sprintf(`{"event_id":%q,"user_id":%q,"country":%q,"geo":{"country":%q}}`, id, user, country, country)
	if country == "" {
		ev = fmt.Sprintf(`{"event_id":%q,"user_id":%q,"country":null}`, id, user)
	}
	return erasure.Row{EventID: id, UserID: user, Region: region, Jurisdiction: map[string]string{"us": "US", "eu": "EU"}[region],
		Topic: "residency." + region, Offset: int64(len(id)), SourcePartition: -1, SourceOffset: -1, Event: []byte(ev)}
}

type memLedger struct {
	mu     sync.Mutex
	leaves []audit.Leaf
	fail   error
}

func (l *memLedger) Append(_ context.Context, leaves []audit.Leaf) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	for _, lf := range leaves {
		if _, err := lf.Encode(); err != nil { // every leaf must be a valid audit leaf
			return err
		}
	}
	l.leaves = append(l.leaves, leaves...)
	return nil
}

func (l *memLedger) all() []audit.Leaf {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.leaves)
}

type memReplays []erasure.ReplayState

func (r memReplays) Replays(context.Context) ([]erasure.ReplayState, error) { return r, nil }

type staticRules struct{ rs *rules.Ruleset }

func (s staticRules) Current() (*rules.Ruleset, error) {
	if s.rs == nil {
		return nil, errors.New("no ruleset")
	}
	return s.rs, nil
}

const testRules = `
jurisdictions:
  - {name: US, region: us, countries: [US, PR]}
  - {name: EU, region: eu, countries: [DE, FR]}
regions:
  - {name: us, cluster: a, topic: residency.us}
  - {name: eu, cluster: b, topic: residency.eu}
stores:
  - {name: us-postgres, regions: [us]}
  - {name: eu-objectstore, regions: [eu]}
`

func testRuleset(t *testing.T) *rules.Ruleset {
	t.Helper()
	rs, err := rules.Parse([]byte(testRules))
	if err != nil {
		t.Fatal(err)
	}
	rs.SetVersion(7)
	return rs
}

type mapPins map[string]string

func (m mapPins) Lookup(_ context.Context, users [][]byte) ([]string, error) {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = m[string(u)]
	}
	return out, nil
}

func pseudonymizer(t *testing.T) *audit.Pseudonymizer {
	t.Helper()
	p, err := audit.NewPseudonymizer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// src returns the residency-source-* headers of an ingest record.
func src(topic string, partition int, offset int64) []string {
	return []string{router.HeaderSourceTopic, topic, router.HeaderSourcePartition, strconv.Itoa(partition), router.HeaderSourceOffset, strconv.FormatInt(offset, 10)}
}

func (s *memStore) HasEvents(_ context.Context, ids []string) (map[string]bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, r := range s.rows {
		if slices.Contains(ids, r.EventID) {
			out[r.EventID] = true
		}
	}
	return out, nil
}

func (s *memStore) EraseEvents(_ context.Context, ids []string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.rows)
	s.rows = slices.DeleteFunc(s.rows, func(r erasure.Row) bool { return slices.Contains(ids, r.EventID) })
	return n - len(s.rows), nil
}

// memMarkers is an in-memory erasure.Markers.
type memMarkers struct {
	mu sync.Mutex
	m  map[audit.Digest]time.Time
}

// newMemMarkers returns an empty memMarkers. It is safe for concurrent use.
func newMemMarkers() *memMarkers { return &memMarkers{m: map[audit.Digest]time.Time{}} }

func (s *memMarkers) Mark(_ context.Context, subject audit.Digest, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.m[subject]; !ok || at.After(cur) {
		s.m[subject] = at
	}
	return nil
}

func (s *memMarkers) Lookup(_ context.Context, subjects []audit.Digest) ([]time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]time.Time, len(subjects))
	for i, d := range subjects {
		out[i] = s.m[d]
	}
	return out, nil
}
