package audittest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/residency-router/residency/audit"
)

// TestStore checks an audit.Store adapter: Get of a path never written
// fails with audit.ErrNotFound; Put then Get returns the bytes written (an
// empty object too), Put replaces, and neither the caller's slice after Put
// nor a slice Get returned can change what is stored; PutIfAbsent writes a
// new path, and on a path already written fails with audit.ErrExists and
// leaves the object as it was; paths that share a prefix are distinct
// objects. newStore is called once per subtest and returns an empty store.
func TestStore(t *testing.T, newStore func(t *testing.T) audit.Store) {
	for _, c := range storeChecks {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := c.check(ctx, newStore(t)); err != nil {
				t.Error(err)
			}
		})
	}
}

// storeChecks are TestStore's checks, each on an empty store; a check
// returns what it found wrong (store_test.go runs them on broken stores).
var storeChecks = []struct {
	name  string
	check func(ctx context.Context, s audit.Store) error
}{
	{"GetMissing", checkGetMissing},
	{"PutGet", checkPutGet},
	{"PutReplaces", checkPutReplaces},
	{"PutIfAbsent", checkPutIfAbsent},
	{"DistinctPaths", checkDistinctPaths},
}

func checkGetMissing(ctx context.Context, s audit.Store) error {
	for _, p := range []string{"checkpoint", "tile/0/000", "nothing/here"} {
		if b, err := s.Get(ctx, p); !errors.Is(err, audit.ErrNotFound) {
			return fmt.Errorf("store.Get(%q) of a path never written = %d bytes, %v; want an error wrapping audit.ErrNotFound", p, len(b), err)
		}
	}
	return nil
}

func checkPutGet(ctx context.Context, s audit.Store) error {
	objects := []struct {
		path string
		data []byte
	}{
		{"checkpoint", []byte("log\n42\nhash\n")},
		{"tile/0/000", bytes.Repeat([]byte{0xAB}, 32*256)},
		{"tile/0/x001/002.p/3", []byte{0, 1, 2, 3}},
		{"tile/entries/000", []byte{}},
	}
	for _, o := range objects {
		data := bytes.Clone(o.data)
		if err := s.Put(ctx, o.path, data); err != nil {
			return fmt.Errorf("store.Put(%q): %w", o.path, err)
		}
		for i := range data {
			data[i] ^= 0xFF // the caller reuses its buffer
		}
	}
	for _, o := range objects {
		got, err := s.Get(ctx, o.path)
		if err != nil {
			return fmt.Errorf("store.Get(%q): %w", o.path, err)
		}
		if !bytes.Equal(got, o.data) {
			return fmt.Errorf("store.Get(%q) = %d bytes %.16x, want %d bytes %.16x", o.path, len(got), got, len(o.data), o.data)
		}
		for i := range got {
			got[i] ^= 0xFF // the caller changes what it read
		}
		if again, err := s.Get(ctx, o.path); err != nil || !bytes.Equal(again, o.data) {
			return fmt.Errorf("store.Get(%q) after the caller changed an earlier result = %.16x, %v; want %.16x", o.path, again, err, o.data)
		}
	}
	return nil
}

func checkPutReplaces(ctx context.Context, s audit.Store) error {
	for i := range 3 {
		want := fmt.Appendf(nil, "checkpoint %d", i)
		if err := s.Put(ctx, "checkpoint", want); err != nil {
			return fmt.Errorf("store.Put #%d: %w", i, err)
		}
		if got, err := s.Get(ctx, "checkpoint"); err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("store.Get after Put #%d = %q, %v; want %q", i, got, err, want)
		}
	}
	return nil
}

func checkPutIfAbsent(ctx context.Context, s audit.Store) error {
	first := []byte("witnessed checkpoint 7")
	if err := s.PutIfAbsent(ctx, "witness/7", first); err != nil {
		return fmt.Errorf("store.PutIfAbsent on a new path: %w", err)
	}
	if err := s.PutIfAbsent(ctx, "witness/7", []byte("another checkpoint 7")); !errors.Is(err, audit.ErrExists) {
		return fmt.Errorf("store.PutIfAbsent on a path already written = %v, want an error wrapping audit.ErrExists", err)
	}
	if got, err := s.Get(ctx, "witness/7"); err != nil || !bytes.Equal(got, first) {
		return fmt.Errorf("after a refused PutIfAbsent, Get = %q, %v; want the first object %q", got, err, first)
	}
	if err := s.Put(ctx, "witness/8", []byte("x")); err != nil {
		return fmt.Errorf("store.Put: %w", err)
	}
	if err := s.PutIfAbsent(ctx, "witness/8", []byte("y")); !errors.Is(err, audit.ErrExists) {
		return fmt.Errorf("store.PutIfAbsent on a path written by Put = %v, want an error wrapping audit.ErrExists", err)
	}
	return nil
}

func checkDistinctPaths(ctx context.Context, s audit.Store) error {
	paths := []string{"tile/0/001", "tile/0/001.p/5", "tile/0/0010", "tile/1/001"}
	for _, p := range paths {
		if err := s.Put(ctx, p, []byte(p)); err != nil {
			return fmt.Errorf("store.Put(%q): %w", p, err)
		}
	}
	for _, p := range paths {
		if got, err := s.Get(ctx, p); err != nil || string(got) != p {
			return fmt.Errorf("store.Get(%q) = %q, %v; want %q", p, got, err, p)
		}
	}
	if _, err := s.Get(ctx, "tile/0"); !errors.Is(err, audit.ErrNotFound) {
		return fmt.Errorf("store.Get of a path that only prefixes objects = %v, want audit.ErrNotFound", err)
	}
	return nil
}
