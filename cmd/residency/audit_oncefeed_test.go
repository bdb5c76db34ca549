package main

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
)

// slowFeed answers Fetch with errs in turn (then records): an error
// wrapping context.DeadlineExceeded is a request that outlived the window.
type slowFeed struct {
	audit.Feed
	errs  []error
	calls int
}

func (f *slowFeed) Fetch(ctx context.Context, _ audit.Cursor, _ int) ([]audit.AuditRecord, error) {
	f.calls++
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	return []audit.AuditRecord{{}}, nil
}

// TestOnceFeedTellsIdleFromSlow: --once ends on the feed's own idle end,
// retries a request that outlived the idle window (a slow broker), and
// fails after onceAttempts such windows in a row.
func TestOnceFeedTellsIdleFromSlow(t *testing.T) {
	slow := fmt.Errorf("kafka: offsets: %w", context.DeadlineExceeded)
	ctx := context.Background()
	for _, tt := range []struct {
		name      string
		errs      []error
		wantErr   error
		wantRecs  int
		wantCalls int
	}{
		{"idle", []error{context.DeadlineExceeded}, errIdle, 0, 1},
		{"slow then records", []error{slow, slow}, nil, 1, 3},
		{"slow every time", []error{slow, slow, slow, slow}, context.DeadlineExceeded, 0, onceAttempts},
		{"broken", []error{errors.New("connection refused")}, nil, 0, 1},
	} {
		f := &slowFeed{errs: tt.errs}
		recs, err := onceFeed{Feed: f, idle: time.Second}.Fetch(ctx, audit.Cursor{}, 10)
		switch {
		case tt.name == "broken":
			if err == nil || errors.Is(err, errIdle) {
				t.Errorf("%s: err %v, want the failure", tt.name, err)
			}
		case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.wantErr)
		case tt.wantErr == nil && err != nil:
			t.Errorf("%s: err %v", tt.name, err)
		}
		if tt.name == "slow every time" && errors.Is(err, errIdle) {
			t.Errorf("%s: a topic never read was taken as idle", tt.name)
		}
		if len(recs) != tt.wantRecs || f.calls != tt.wantCalls {
			t.Errorf("%s: %d records after %d calls, want %d after %d", tt.name, len(recs), f.calls, tt.wantRecs, tt.wantCalls)
		}
	}
}
