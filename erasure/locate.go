package erasure

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/residency-router/residency/stream"
)

// Kafka cannot delete one record: a topic drops records only from the start
// of a partition (retention, DeleteRecords) or, when compacted, keeps the
// latest record per key. So an erasure cannot take a user's events out of
// the topics; it lists where they still sit and when retention will remove
// them (see docs/erasure.md for the options).

// ScanProgress is a snapshot of a long scan, passed to a progress callback
// after every batch.
type ScanProgress struct {
	// Place is what is being read: CLUSTER/TOPIC or "store NAME".
	Place string `json:"place"`
	// Done is how many records (rows) of Place were read so far.
	Done int64 `json:"done"`
	// Total is how many Place holds (offsets of a topic), 0 when unknown
	// (a store).
	Total int64 `json:"total"`
	// Found is how many matched so far in Place.
	Found int64 `json:"found"`
}

// Span is the half-open offset range [Start, End).
type Span struct {
	// Start is the first offset.
	Start int64 `json:"start"`
	// End is the offset after the last.
	End int64 `json:"end"`
}

// PartitionHoldings are the user's records in one partition.
type PartitionHoldings struct {
	// Partition is the partition.
	Partition int `json:"partition"`
	// Ranges are the offsets of the user's records, consecutive offsets
	// merged.
	Ranges []Span `json:"ranges"`
	// Records is how many there are.
	Records int64 `json:"records"`
	// Newest is the newest record timestamp among them.
	Newest time.Time `json:"newest"`
}

// Retention is when a topic's retention removes records, as far as its
// configuration says.
type Retention struct {
	// CleanupPolicy is cleanup.policy ("delete", "compact" or both).
	CleanupPolicy string `json:"cleanup_policy"`
	// RetentionMs is retention.ms (-1: forever).
	RetentionMs int64 `json:"retention_ms"`
	// SegmentMs is segment.ms: a record goes only with its whole segment,
	// once the segment is closed.
	SegmentMs int64 `json:"segment_ms"`
	// MaxCompactionLagMs is max.compaction.lag.ms (compacted topics).
	MaxCompactionLagMs int64 `json:"max_compaction_lag_ms,omitempty"`
	// NotBefore is the earliest time retention can remove the newest of
	// the records listed: its timestamp plus retention.ms (zero when it
	// never does).
	NotBefore time.Time `json:"not_before,omitzero"`
	// Never is true when retention never removes them (retention.ms -1, or
	// a compacted topic without delete).
	Never bool `json:"never"`
	// Note explains what else it depends on.
	Note string `json:"note"`
}

// TopicHoldings are the user's records in one topic.
type TopicHoldings struct {
	Topic
	// Scanned is how many records were read.
	Scanned int64 `json:"scanned"`
	// Records is how many are the user's.
	Records int64 `json:"records"`
	// Unreadable is how many records could not be read (their user id is
	// unknown: they may be the user's).
	Unreadable int64 `json:"unreadable"`
	// Partitions are the partitions holding the user's records.
	Partitions []PartitionHoldings `json:"partitions,omitempty"`
	// Retention is when retention removes them (present when Records > 0).
	Retention *Retention `json:"retention,omitempty"`
}

// LocateConfig configures a Locator.
type LocateConfig struct {
	// Clusters are the clusters of Topics, by name. Required.
	Clusters map[string]Cluster
	// Topics are every topic to search: ingest, quarantine, dead-letter,
	// sink quarantine, hold and pinned topics. Required.
	Topics []Topic
	// Events reads each record's user id. Required.
	Events EventReader
	// Batch is how many records a read hands over at once. Default 500.
	Batch int
	// Progress, if set, is called after every batch.
	Progress func(ScanProgress)
}

// Locator finds where a user's events sit in Kafka topics, by reading
// every record (its user id, with the extractor's user id field): a full
// read of every topic, as costly as the topics are large.
type Locator struct {
	cfg LocateConfig
}

// NewLocator checks cfg and returns a Locator; errors wrap ErrConfig.
func NewLocator(cfg LocateConfig) (*Locator, error) {
	if cfg.Events == nil {
		return nil, fmt.Errorf("%w: locate: an event reader is required", ErrConfig)
	}
	for _, t := range cfg.Topics {
		if c, ok := cfg.Clusters[t.Cluster]; !ok || c.Admin == nil || c.Reader == nil {
			return nil, fmt.Errorf("%w: topic %s: no admin and reader for cluster %q", ErrConfig, t, t.Cluster)
		}
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	return &Locator{cfg: cfg}, nil
}

// Locate reads every topic and returns, per topic, where userID's events
// are and when retention removes them. Records whose user id cannot be
// read are counted as unreadable.
func (l *Locator) Locate(ctx context.Context, userID string) ([]TopicHoldings, error) {
	if userID == "" {
		return nil, ErrEmptyUser
	}
	want := []byte(userID)
	out := make([]TopicHoldings, 0, len(l.cfg.Topics))
	for _, t := range l.cfg.Topics {
		h, err := l.locateIn(ctx, t, want)
		if err != nil {
			return out, err
		}
		out = append(out, h)
	}
	return out, nil
}

func (l *Locator) locateIn(ctx context.Context, t Topic, user []byte) (TopicHoldings, error) {
	c := l.cfg.Clusters[t.Cluster]
	h := TopicHoldings{Topic: t}
	low, high, err := c.Admin.Watermarks(ctx, t.Name)
	if err != nil {
		return h, fmt.Errorf("erasure: locate in %s: %w", t, err)
	}
	var total int64
	for p, e := range high {
		total += max(e-low[p], 0)
	}
	for _, p := range sortedKeys(high) {
		if high[p] <= low[p] {
			continue
		}
		ph := PartitionHoldings{Partition: p}
		err := c.Reader.ReadRange(ctx, t.Name, p, low[p], high[p], l.cfg.Batch, func(ms []stream.Message) error {
			for i := range ms {
				m := &ms[i]
				h.Scanned++
				f, err := l.cfg.Events.Fields(ctx, t, m)
				if err != nil {
					if transient(err) {
						return err
					}
					h.Unreadable++
					continue
				}
				if !bytes.Equal(f.UserID, user) {
					continue
				}
				ph.Records++
				if m.Time.After(ph.Newest) {
					ph.Newest = m.Time
				}
				if n := len(ph.Ranges); n > 0 && ph.Ranges[n-1].End == m.Offset {
					ph.Ranges[n-1].End++
				} else {
					ph.Ranges = append(ph.Ranges, Span{m.Offset, m.Offset + 1})
				}
			}
			if l.cfg.Progress != nil {
				l.cfg.Progress(ScanProgress{Place: t.String(), Done: h.Scanned, Total: total, Found: h.Records + ph.Records})
			}
			return nil
		})
		if err != nil {
			return h, fmt.Errorf("erasure: locate in %s/%d: %w", t, p, err)
		}
		if ph.Records > 0 {
			h.Records += ph.Records
			h.Partitions = append(h.Partitions, ph)
		}
	}
	if h.Records > 0 {
		cfg, err := c.Admin.TopicConfig(ctx, t.Name)
		if err != nil {
			return h, fmt.Errorf("erasure: locate in %s: %w", t, err)
		}
		var newest time.Time
		for _, p := range h.Partitions {
			if p.Newest.After(newest) {
				newest = p.Newest
			}
		}
		r := retentionOf(cfg, newest, t.Role)
		h.Retention = &r
	}
	return h, nil
}

// retentionOf says when a topic's retention removes a record of time
// newest, from the topic's configuration.
func retentionOf(cfg map[string]string, newest time.Time, role Role) Retention {
	num := func(k string, def int64) int64 {
		if v, err := strconv.ParseInt(cfg[k], 10, 64); err == nil {
			return v
		}
		return def
	}
	r := Retention{
		CleanupPolicy:      cfg["cleanup.policy"],
		RetentionMs:        num("retention.ms", -1),
		SegmentMs:          num("segment.ms", 7*24*3600*1000),
		MaxCompactionLagMs: num("max.compaction.lag.ms", 0),
	}
	if r.CleanupPolicy == "" {
		r.CleanupPolicy = "delete"
	}
	del := strings.Contains(r.CleanupPolicy, "delete")
	compact := strings.Contains(r.CleanupPolicy, "compact")
	var notes []string
	switch {
	case del && r.RetentionMs >= 0:
		r.NotBefore = newest.Add(time.Duration(r.RetentionMs) * time.Millisecond)
		notes = append(notes, fmt.Sprintf("retention removes a record once its segment is closed (segment.ms %s, or segment.bytes) "+
			"and its newest record is older than retention.ms %s; a partition that receives no more records keeps its last segment open, "+
			"and the broker checks every log.retention.check.interval.ms",
			time.Duration(r.SegmentMs)*time.Millisecond, time.Duration(r.RetentionMs)*time.Millisecond))
	default:
		r.Never = true
		if del {
			notes = append(notes, "retention.ms is -1: time never removes them")
		} else {
			notes = append(notes, "cleanup.policy is compact: time never removes them")
		}
	}
	if compact {
		notes = append(notes, "compaction removes a record only once a later record has its key (a tombstone, a null value, for the key removes it "+
			"within max.compaction.lag.ms, and the tombstone after delete.retention.ms)")
	}
	if role == RoleIngest || role == RoleQuarantine || role == RoleDeadLetter || role == RoleSinkQuarantine {
		notes = append(notes, "residency purge deletes them earlier, once they are placed (and, for quarantine and dead-letter, replayed)")
	}
	r.Note = strings.Join(notes, "; ")
	return r
}
