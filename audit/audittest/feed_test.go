package audittest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
)

// memFeed is an in-memory audit topic, the reference the suite is checked
// against.
type memFeed struct {
	mu    sync.Mutex
	parts [][]audit.AuditRecord
}

func (f *memFeed) produce(_ testing.TB, p int32, v []byte) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	off := int64(len(f.parts[p]))
	f.parts[p] = append(f.parts[p], audit.AuditRecord{Partition: p, Offset: off, Value: v})
	return off
}

func (f *memFeed) Fetch(ctx context.Context, from audit.Cursor, max int) ([]audit.AuditRecord, error) {
	for {
		f.mu.Lock()
		var out []audit.AuditRecord
		for p := range f.parts {
			for _, r := range f.parts[p][min(from[int32(p)], int64(len(f.parts[p]))):] {
				if len(out) < max {
					out = append(out, r)
				}
			}
		}
		f.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (f *memFeed) Read(_ context.Context, p int32, from, to int64) ([]audit.AuditRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if from < 0 || to > int64(len(f.parts[p])) || from > to {
		return nil, fmt.Errorf("range %d-%d out of bounds", from, to)
	}
	return append([]audit.AuditRecord(nil), f.parts[p][from:to]...), nil
}

func TestMemFeedConforms(t *testing.T) {
	TestFeed(t, func(t *testing.T) FeedUnderTest {
		f := &memFeed{parts: make([][]audit.AuditRecord, 3)}
		return FeedUnderTest{Feed: f, Partitions: 3, Produce: f.produce}
	})
}
