package kafka

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/stream"
)

// RecordSource is the audit.RecordSource over Kafka topics of several
// clusters, by cluster name: `audit verify` reads the ingest, pinned,
// quarantine, dead-letter and sink quarantine topics through it. It reads
// without a consumer group and changes no offsets; records are handed to
// the verifier one by one and not kept (the verifier keeps digests).
type RecordSource struct {
	readers map[string]*RangeReader
	admins  map[string]*Admin
	// IngestIsolationLevel is the isolation level the ingest ranges
	// (audit.RoleIngest) are read at: the router's kafka.isolation_level,
	// so that the verifier sees the events the router saw. Read
	// read_committed, the offsets of aborted records are handed over as
	// audit.KindAborted. The other roles are always read
	// read_uncommitted: every data record in a destination topic is
	// judged, whoever wrote it. Transaction markers are handed over as
	// audit.KindTxnMarker at either level. Default read_uncommitted.
	IngestIsolationLevel string
	// OnUnstable, when set, is told of the ingest offsets Ranges leaves
	// out read_committed because a transaction there is still open (from
	// the last stable offset to the high-water mark): a read_committed
	// router has not seen them yet either; the next verification does.
	OnUnstable func(topic string, partition int32, from, to int64)
}

// NewRecordSource returns a RecordSource over clusters (by name).
func NewRecordSource(clusters map[string]Cluster) (*RecordSource, error) {
	s := &RecordSource{readers: map[string]*RangeReader{}, admins: map[string]*Admin{}}
	for name, c := range clusters {
		c.Name = name
		r, err := NewRangeReader(c)
		if err != nil {
			return nil, err
		}
		r.IdleCheck, r.MaxIdle = time.Second, 15
		a, err := NewAdmin(c)
		if err != nil {
			return nil, err
		}
		s.readers[name], s.admins[name] = r, a
	}
	return s, nil
}

// Close releases the source's connections.
func (s *RecordSource) Close() error {
	for _, a := range s.admins {
		_ = a.Close()
	}
	return nil
}

// Records calls fn for each record of r that still exists, in offset
// order, and for each offset of r that holds a transaction marker
// (audit.KindTxnMarker) or, for an ingest range read read_committed, an
// aborted record (audit.KindAborted); see IngestIsolationLevel.
func (s *RecordSource) Records(ctx context.Context, r audit.TopicRange, fn func(*audit.Record) error) error {
	shared, ok := s.readers[r.Cluster]
	if !ok {
		return fmt.Errorf("%w: cluster %q is not configured", ErrConfig, r.Cluster)
	}
	rr := *shared // a copy: its isolation level is this read's
	rr.IsolationLevel = ReadUncommitted
	if r.Role == audit.RoleIngest {
		rr.IsolationLevel = s.IngestIsolationLevel
	}
	// The offsets without a data record, handed over in offset order
	// between the records (ReadRangeSkips reports each skip before any
	// record after it): kept as ranges, so a large aborted transaction
	// costs one entry, not one per offset.
	type span struct {
		from, to int64
		kind     audit.RecordKind
	}
	var pending []span
	passed := func(upTo int64) error {
		for len(pending) > 0 && pending[0].from < upTo {
			p := &pending[0]
			rec := audit.Record{Partition: r.Partition, Offset: p.from, Kind: p.kind}
			if p.from++; p.from >= p.to {
				pending = pending[1:]
			}
			if err := fn(&rec); err != nil {
				return err
			}
		}
		return nil
	}
	skip := func(sk Skip) {
		kind := audit.KindData
		switch sk.Reason {
		case SkipTxnMarker:
			kind = audit.KindTxnMarker
		case SkipAborted:
			kind = audit.KindAborted
		default:
			return // no record there: the verifier sees the offset without one
		}
		if from, to := max(sk.From, r.From), min(sk.To, r.To); from < to {
			pending = append(pending, span{from, to, kind})
		}
	}
	err := rr.ReadRangeSkips(ctx, r.Topic, int(r.Partition), r.From, r.To, 500, func(ms []stream.Message) error {
		for i := range ms {
			m := &ms[i]
			if err := passed(m.Offset); err != nil {
				return err
			}
			rec := audit.Record{Partition: r.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
			for _, h := range m.Headers {
				rec.Headers = append(rec.Headers, audit.Header{Key: h.Key, Value: h.Value})
			}
			if err := fn(&rec); err != nil {
				return err
			}
		}
		return nil
	}, skip)
	if err != nil {
		return err
	}
	return passed(math.MaxInt64)
}

// Ranges returns the offset ranges of every partition of topic on cluster
// for role: the records produced in [since, until). A zero since starts
// at offset 0, not at the log start offset, so that records deleted since
// they were written (retention, delete-records, a rewritten topic) are
// still looked for and reported; a zero until ends at the high-water mark.
func (s *RecordSource) Ranges(ctx context.Context, cluster, topic string, role audit.Role, since, until time.Time) ([]audit.TopicRange, error) {
	a, ok := s.admins[cluster]
	if !ok {
		return nil, fmt.Errorf("%w: cluster %q is not configured", ErrConfig, cluster)
	}
	var prs []PartitionRange
	var err error
	if since.IsZero() && until.IsZero() {
		prs, err = a.Bounds(ctx, topic)
	} else {
		prs, err = a.TimeRanges(ctx, topic, since, until)
	}
	if err != nil {
		return nil, err
	}
	iso, err := isolationLevel(s.IngestIsolationLevel)
	if err != nil {
		return nil, err
	}
	var stable map[int]int64
	if role == audit.RoleIngest && iso == 1 {
		// Read committed, the ingest ranges end at the last stable offset:
		// past it a transaction is still open, and a read would wait for
		// it to end (ErrStalled), as the router's consumer waits.
		if stable, err = a.StableOffsets(ctx, topic); err != nil {
			return nil, err
		}
	}
	out := make([]audit.TopicRange, 0, len(prs))
	for _, p := range prs {
		if since.IsZero() {
			p.Start = 0
		}
		if lso, ok := stable[p.Partition]; ok && lso < p.End {
			if s.OnUnstable != nil {
				s.OnUnstable(topic, int32(p.Partition), max(lso, p.Start), p.End)
			}
			p.End = max(lso, p.Start)
		}
		out = append(out, audit.TopicRange{Cluster: cluster, Topic: topic, Role: role, Partition: int32(p.Partition), From: p.Start, To: p.End})
	}
	return out, nil
}
