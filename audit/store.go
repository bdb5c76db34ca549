package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Store errors; callers branch with errors.Is.
var (
	// ErrNotFound: no object at that path.
	ErrNotFound = errors.New("audit: object not found")
	// ErrExists: a conditional write found the object already there.
	ErrExists = errors.New("audit: object exists")
)

// Store is where the log lives: objects by path. The integrator writes it;
// readers and verifiers only Get. connectors/objectstore.AuditLogStore is
// the adapter on a bucket (file://, s3://); audittest.TestStore checks an
// adapter.
type Store interface {
	// Get returns the object at path, or an error wrapping ErrNotFound.
	Get(ctx context.Context, path string) ([]byte, error)
	// Put writes the object at path, replacing any; it is visible whole
	// or not at all.
	Put(ctx context.Context, path string, data []byte) error
	// PutIfAbsent writes the object only if none exists at path, else it
	// returns an error wrapping ErrExists.
	PutIfAbsent(ctx context.Context, path string, data []byte) error
}

// MemStore is an in-memory Store for tests and tools. The zero value is
// ready to use; it is safe for concurrent use.
type MemStore struct {
	mu      sync.Mutex
	objects map[string][]byte
}

// Get implements Store.
func (m *MemStore) Get(_ context.Context, path string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objects[path]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	return append([]byte(nil), b...), nil
}

// Put implements Store.
func (m *MemStore) Put(_ context.Context, path string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.objects == nil {
		m.objects = make(map[string][]byte)
	}
	m.objects[path] = append([]byte(nil), data...)
	return nil
}

// PutIfAbsent implements Store.
func (m *MemStore) PutIfAbsent(_ context.Context, path string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.objects[path]; ok {
		return fmt.Errorf("%w: %s", ErrExists, path)
	}
	if m.objects == nil {
		m.objects = make(map[string][]byte)
	}
	m.objects[path] = append([]byte(nil), data...)
	return nil
}

// Delete removes the object at path (tests use it to tamper).
func (m *MemStore) Delete(path string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.objects, path)
}

// Paths returns every path held, in no order.
func (m *MemStore) Paths() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.objects))
	for p := range m.objects {
		out = append(out, p)
	}
	return out
}
