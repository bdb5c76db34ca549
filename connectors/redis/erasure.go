// Package redis holds the Redis adapters of residency's runtimes. This
// file: the erasure markers (erasure.Markers) and the erasure lock
// (erasure.Locker).
package redis

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/erasure"
)

// MarkersKey is the key, after the prefix, of the hash of erasure markers:
// field the keyed hash of a user id (64 hex digits), value the time of the
// erasure in Unix milliseconds.
const MarkersKey = "erasure:subjects"

// Markers keeps the erasure markers in one Redis hash next to the rules
// and the pins (PREFIX + MarkersKey), so every sink that reads its rules
// from Redis can check them: one HMGET per batch. Users appear only as
// keyed hashes (audit.Pseudonymizer.Subject): without the key the hash
// neither names a user nor lets anyone test whether a given user was
// erased. Each erasure's audit leaf carries the same hash and time, so the
// hash can be rebuilt from the audit log if Redis loses it.
type Markers struct {
	c   goredis.UniversalClient
	key string
}

var _ erasure.Markers = (*Markers)(nil)

// NewMarkers keeps markers in c under prefix (production: "residency:",
// as the rules).
func NewMarkers(c goredis.UniversalClient, prefix string) *Markers {
	return &Markers{c: c, key: prefix + MarkersKey}
}

// Key returns the Redis key of the markers.
func (m *Markers) Key() string { return m.key }

// markScript keeps the later of the stored and the given time.
var markScript = goredis.NewScript(`
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (not cur) or tonumber(cur) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1`)

// Mark implements erasure.Markers.
func (m *Markers) Mark(ctx context.Context, subject audit.Digest, at time.Time) error {
	if err := markScript.Run(ctx, m.c, []string{m.key}, subject.String(), at.UnixMilli()).Err(); err != nil {
		return fmt.Errorf("redis: erasure marker: %w", err)
	}
	return nil
}

// Len returns how many users were erased (markers kept): a sink without
// the pseudonymisation key refuses to start when there are any, since it
// could not keep them out of its store.
func (m *Markers) Len(ctx context.Context) (int64, error) {
	n, err := m.c.HLen(ctx, m.key).Result()
	if err != nil {
		return 0, fmt.Errorf("redis: erasure markers: %w", err)
	}
	return n, nil
}

// lookupChunk bounds the fields of one HMGET.
const lookupChunk = 1000

// Lookup implements erasure.Markers.
func (m *Markers) Lookup(ctx context.Context, subjects []audit.Digest) ([]time.Time, error) {
	out := make([]time.Time, len(subjects))
	for start := 0; start < len(subjects); start += lookupChunk {
		end := min(start+lookupChunk, len(subjects))
		fields := make([]string, end-start)
		for i, d := range subjects[start:end] {
			fields[i] = d.String()
		}
		vals, err := m.c.HMGet(ctx, m.key, fields...).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: erasure markers: %w", err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				continue // nil: not erased
			}
			ms, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("redis: erasure marker %s is corrupt (%q)", fields[i], s)
			}
			out[start+i] = time.UnixMilli(ms).UTC()
		}
	}
	return out, nil
}

// Locker takes named locks in Redis (SET NX with an expiry, renewed while
// held): one holder at a time across processes.
type Locker struct {
	c      goredis.UniversalClient
	prefix string
	// TTL is how long a lock outlives a holder that stopped renewing it
	// (crashed). Default 30s; renewed every TTL/3.
	TTL time.Duration
}

var _ erasure.Locker = (*Locker)(nil)

// NewLocker takes locks in c under prefix + "lock:".
func NewLocker(c goredis.UniversalClient, prefix string) *Locker {
	return &Locker{c: c, prefix: prefix, TTL: 30 * time.Second}
}

var (
	renewScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)
	releaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)
)

// Lock implements erasure.Locker. held is cancelled when release is
// called or when the lock could not be renewed (Redis out of reach for
// longer than the TTL allows, or the key taken over): the holder must stop
// then.
func (l *Locker) Lock(ctx context.Context, name string) (context.Context, func(), error) {
	ttl := l.TTL
	if ttl <= 0 {
		ttl = 30 * time.Second
	}
	key := l.prefix + "lock:" + name
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, nil, err
	}
	token := hex.EncodeToString(b[:])
	ok, err := l.c.SetNX(ctx, key, token, ttl).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("redis: lock %s: %w", name, err)
	}
	if !ok {
		left, _ := l.c.PTTL(ctx, key).Result()
		return nil, nil, fmt.Errorf("%w (lock %s held by another process; it expires in %s unless renewed)", erasure.ErrLocked, key, left.Round(time.Second))
	}
	held, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		for {
			select {
			case <-held.Done():
				return
			case <-t.C:
			}
			n, err := renewScript.Run(held, l.c, []string{key}, token, ttl.Milliseconds()).Int()
			if held.Err() != nil {
				return
			}
			if err != nil || n == 0 {
				cancel(fmt.Errorf("redis: lock %s lost: %w", key, errors.Join(err, errLockLost)))
				return
			}
		}
	}()
	var once sync.Once
	release := func() {
		once.Do(func() {
			cancel(errReleased)
			<-done
			rctx, rc := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer rc()
			_ = releaseScript.Run(rctx, l.c, []string{key}, token).Err()
		})
	}
	return held, release, nil
}

var (
	errLockLost = errors.New("not renewed in time or taken over")
	errReleased = errors.New("lock released")
)
