package audittest

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/residency-router/residency/audit"
)

func TestMemStoreConforms(t *testing.T) {
	TestStore(t, func(*testing.T) audit.Store { return &audit.MemStore{} })
}

// brokenStore is a MemStore with one fault, to show that TestStore's checks
// catch it.
type brokenStore struct {
	audit.MemStore
	mu          sync.Mutex
	nilMissing  bool   // Get of a missing path returns nil, nil
	overwrite   bool   // PutIfAbsent overwrites
	keepsCaller bool   // Put keeps the caller's slice
	shared      []byte // Get's result for the path Put kept
	sharedPath  string
	prefixGet   bool // Get of a prefix returns the first object under it
}

func (b *brokenStore) Get(ctx context.Context, path string) ([]byte, error) {
	b.mu.Lock()
	if b.keepsCaller && path == b.sharedPath {
		defer b.mu.Unlock()
		return b.shared, nil
	}
	b.mu.Unlock()
	got, err := b.MemStore.Get(ctx, path)
	if errors.Is(err, audit.ErrNotFound) {
		if b.prefixGet {
			for _, p := range b.Paths() {
				if strings.HasPrefix(p, path) {
					return b.MemStore.Get(ctx, p)
				}
			}
		}
		if b.nilMissing {
			return nil, nil
		}
	}
	return got, err
}

func (b *brokenStore) Put(ctx context.Context, path string, data []byte) error {
	if b.keepsCaller && len(data) > 0 {
		b.mu.Lock()
		b.shared, b.sharedPath = data, path
		b.mu.Unlock()
	}
	return b.MemStore.Put(ctx, path, data)
}

func (b *brokenStore) PutIfAbsent(ctx context.Context, path string, data []byte) error {
	if b.overwrite {
		return b.MemStore.Put(ctx, path, data)
	}
	return b.MemStore.PutIfAbsent(ctx, path, data)
}

// TestStoreChecksCatchFaults runs TestStore's checks on stores with one
// fault each: the check named must fail, and the MemStore must pass them all.
func TestStoreChecksCatchFaults(t *testing.T) {
	for _, c := range []struct {
		fault string
		store func() audit.Store
		check string
	}{
		{"Get of a missing path returns nothing and no error", func() audit.Store { return &brokenStore{nilMissing: true} }, "GetMissing"},
		{"PutIfAbsent overwrites", func() audit.Store { return &brokenStore{overwrite: true} }, "PutIfAbsent"},
		{"Put keeps the caller's slice", func() audit.Store { return &brokenStore{keepsCaller: true} }, "PutGet"},
		{"a prefix reads as an object", func() audit.Store { return &brokenStore{prefixGet: true} }, "DistinctPaths"},
	} {
		t.Run(c.check, func(t *testing.T) {
			for _, sc := range storeChecks {
				ctx := context.Background()
				if err := sc.check(ctx, &audit.MemStore{}); err != nil {
					t.Fatalf("check %s fails the MemStore: %v", sc.name, err)
				}
				if sc.name != c.check {
					continue
				}
				err := sc.check(ctx, c.store())
				if err == nil {
					t.Fatalf("check %s passed a store whose %s", sc.name, c.fault)
				}
				t.Logf("check %s reports: %v", sc.name, err)
			}
		})
	}
}
