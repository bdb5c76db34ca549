package kafka

import (
	"context"
	"fmt"
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

// Records calls fn for each record of r that still exists, in offset order.
func (s *RecordSource) Records(ctx context.Context, r audit.TopicRange, fn func(*audit.Record) error) error {
	rr, ok := s.readers[r.Cluster]
	if !ok {
		return fmt.Errorf("%w: cluster %q is not configured", ErrConfig, r.Cluster)
	}
	return rr.ReadRange(ctx, r.Topic, int(r.Partition), r.From, r.To, 500, func(ms []stream.Message) error {
		for i := range ms {
			m := &ms[i]
			rec := audit.Record{Partition: r.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
			for _, h := range m.Headers {
				rec.Headers = append(rec.Headers, audit.Header{Key: h.Key, Value: h.Value})
			}
			if err := fn(&rec); err != nil {
				return err
			}
		}
		return nil
	})
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
	out := make([]audit.TopicRange, 0, len(prs))
	for _, p := range prs {
		if since.IsZero() {
			p.Start = 0
		}
		out = append(out, audit.TopicRange{Cluster: cluster, Topic: topic, Role: role, Partition: int32(p.Partition), From: p.Start, To: p.End})
	}
	return out, nil
}
