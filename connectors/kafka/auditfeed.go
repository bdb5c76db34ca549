package kafka

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/stream"
)

// ErrAuditGap is returned by AuditFeed.Read when offsets of the range it
// was asked for are no longer held by the broker (retention or
// delete-records removed them), so the exact re-read the integrator needs
// is impossible.
var ErrAuditGap = errors.New("kafka: audit records missing from the audit topic")

// AuditFeed is the audit.Feed over the audit topic of one cluster: it reads
// offset ranges without a consumer group (the integrator keeps its own
// cursor in the log's state) and changes no offsets. It is safe for use by
// one integrator at a time.
type AuditFeed struct {
	topic string
	admin *Admin
	rr    *RangeReader
	// Poll is how long Fetch waits between two looks at the topic's
	// high-water marks while nothing is new. Default 200ms.
	Poll time.Duration

	mu    sync.Mutex
	skips []Skip
}

// NewAuditFeed returns the audit feed of topic on cluster. Close releases
// its connections.
func NewAuditFeed(cluster Cluster, topic string) (*AuditFeed, error) {
	if topic == "" {
		return nil, fmt.Errorf("%w: audit feed: no topic", ErrConfig)
	}
	a, err := NewAdmin(cluster)
	if err != nil {
		return nil, err
	}
	rr, err := NewRangeReader(cluster)
	if err != nil {
		_ = a.Close()
		return nil, err
	}
	rr.IdleCheck = time.Second
	rr.MaxIdle = 20
	f := &AuditFeed{topic: topic, admin: a, rr: rr, Poll: 200 * time.Millisecond}
	rr.OnSkip = func(s Skip) {
		f.mu.Lock()
		f.skips = append(f.skips, s)
		f.mu.Unlock()
	}
	return f, nil
}

// Topic is the audit topic's name.
func (f *AuditFeed) Topic() string { return f.topic }

// Close releases the feed's connections.
func (f *AuditFeed) Close() error { return f.admin.Close() }

// Fetch returns up to max records at or after the cursor (a partition the
// cursor lacks starts at its log start offset), in offset order within
// each partition. It blocks until one is available or ctx is done, and
// then returns ctx's error: itself when the topic was read and held
// nothing new, wrapped with the failure when it could not be read.
func (f *AuditFeed) Fetch(ctx context.Context, from audit.Cursor, max int) ([]audit.AuditRecord, error) {
	if max <= 0 {
		max = 64
	}
	poll := f.Poll
	if poll <= 0 {
		poll = 200 * time.Millisecond
	}
	for {
		bounds, err := f.admin.Bounds(ctx, f.topic)
		if err != nil {
			if cerr := ended(ctx); cerr != nil {
				// Not idle: the topic could not be read before ctx ended.
				return nil, fmt.Errorf("%w: kafka: audit feed %s: %w", cerr, f.topic, err)
			}
			return nil, fmt.Errorf("kafka: audit feed %s: %w", f.topic, err)
		}
		var out []audit.AuditRecord
		for _, b := range bounds {
			if len(out) >= max {
				break
			}
			start := b.Start
			if c, ok := from[int32(b.Partition)]; ok && c > start {
				start = c
			}
			if start >= b.End {
				continue
			}
			end := min(b.End, start+int64(max-len(out)))
			recs, err := f.read(ctx, int32(b.Partition), start, end)
			if err != nil {
				if cerr := ended(ctx); cerr != nil {
					return nil, fmt.Errorf("%w: %w", cerr, err)
				}
				return nil, err
			}
			out = append(out, recs...)
		}
		if len(out) > 0 {
			return out, nil
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// ended returns ctx's error, or context.DeadlineExceeded once its
// deadline has passed: a connection deadline taken from ctx can expire (an
// i/o timeout) before ctx's own timer has marked it done, on a loaded host.
func ended(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// Read returns exactly the records of partition p with offsets in
// [from, to), in offset order. It fails with ErrAuditGap if the broker no
// longer holds some of them.
func (f *AuditFeed) Read(ctx context.Context, p int32, from, to int64) ([]audit.AuditRecord, error) {
	f.mu.Lock()
	f.skips = f.skips[:0]
	f.mu.Unlock()
	recs, err := f.read(ctx, p, from, to)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	skips := append([]Skip(nil), f.skips...)
	f.mu.Unlock()
	for _, s := range skips {
		switch s.Reason {
		case SkipNoRecords, SkipTxnMarker, SkipAborted:
			// No audit record was lost there: compaction, or a
			// transaction's marker (aborted records are skipped only
			// read_committed, which the feed does not read).
		default:
			return nil, fmt.Errorf("%w: %s/%d offsets %d to %d (%s)", ErrAuditGap, f.topic, p, s.From, s.To-1, s.Reason)
		}
	}
	return recs, nil
}

func (f *AuditFeed) read(ctx context.Context, p int32, from, to int64) ([]audit.AuditRecord, error) {
	var out []audit.AuditRecord
	err := f.rr.ReadRange(ctx, f.topic, int(p), from, to, 256, func(ms []stream.Message) error {
		for _, m := range ms {
			out = append(out, audit.AuditRecord{Partition: p, Offset: m.Offset, Value: m.Value})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kafka: audit feed %s/%d [%d, %d): %w", f.topic, p, from, to, err)
	}
	return out, nil
}
