package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the key prefix production uses for everything residency
// keeps in Redis.
const DefaultPrefix = "residency:"

// VersionInfo describes one applied version of the ruleset. Versions are
// immutable: a change, and a rollback, is a new version.
type VersionInfo struct {
	// Number is the version number: 1 for the first, then one more each time.
	Number int64 `json:"number"`
	// SHA256 is the hex SHA-256 of the YAML content as applied.
	SHA256 string `json:"sha256"`
	// Author is who applied it (from --author).
	Author string `json:"author"`
	// AppliedAt is when it was applied.
	AppliedAt time.Time `json:"applied_at"`
	// Previous is the version that was current when it was applied; 0 for
	// the first.
	Previous int64 `json:"previous"`
	// Note says why it exists when not a plain apply, e.g. "rollback to 3".
	Note string `json:"note,omitempty"`
}

// ApplyOptions say who applies a change and what it is based on.
type ApplyOptions struct {
	// Base is the version the change was reviewed against. The apply is
	// refused with ErrConflict if another version is current. Default 0: no
	// version may exist yet.
	Base int64
	// Author is recorded with the version. Default "unknown".
	Author string
	// Note is recorded with the version. Default empty.
	Note string
}

// RedisStore keeps the versions of the ruleset and the per-user pins in
// Redis, every key under one prefix:
//
//	PREFIX rules:current    the current version number
//	PREFIX rules:v:N        version N (hash: content, sha256, author, ...)
//	PREFIX rules:changed    pub/sub channel: a new version number
//	PREFIX pins             hash: user id -> jurisdiction
//	PREFIX pins:changed     pub/sub channel: a user id whose pin changed
//
// It implements Source for a Cache and PinSource for Pins.
type RedisStore struct {
	client redis.UniversalClient
	prefix string
}

// NewRedisStore returns a store using client with every key under prefix
// (production uses DefaultPrefix; tests use a prefix of their own).
func NewRedisStore(client redis.UniversalClient, prefix string) *RedisStore {
	return &RedisStore{client: client, prefix: prefix}
}

func (s *RedisStore) currentKey() string { return s.prefix + "rules:current" }
func (s *RedisStore) versionKey(v int64) string {
	return s.prefix + "rules:v:" + strconv.FormatInt(v, 10)
}
func (s *RedisStore) rulesChannel() string { return s.prefix + "rules:changed" }
func (s *RedisStore) pinsKey() string      { return s.prefix + "pins" }
func (s *RedisStore) pinsChannel() string  { return s.prefix + "pins:changed" }

// redisErr wraps an error from go-redis: network and timeout errors become
// ErrUnavailable; replies from the server are kept as they are.
func redisErr(op string, err error) error {
	var reply redis.Error
	if errors.As(err, &reply) && !strings.HasPrefix(err.Error(), "LOADING") {
		return fmt.Errorf("rules: %s: %w", op, err)
	}
	return fmt.Errorf("rules: %s: %w: %w", op, ErrUnavailable, err)
}

// Hash returns the hex SHA-256 of ruleset content, as VersionInfo.SHA256.
func Hash(content []byte) string {
	sum := sha256.Sum256(content)
	return hex.EncodeToString(sum[:])
}

// LatestVersion returns the current version number; 0 when none has been
// applied.
func (s *RedisStore) LatestVersion(ctx context.Context) (int64, error) {
	v, err := s.client.Get(ctx, s.currentKey()).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, redisErr("read current version", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("rules: current version %q: %w", v, ErrCorrupt)
	}
	return n, nil
}

var infoFields = []string{"number", "sha256", "author", "applied_at", "previous", "note"}

// parseInfo decodes a version's fields (in infoFields order).
func parseInfo(v int64, vals []any) (VersionInfo, error) {
	str := make([]string, len(vals))
	missing := 0
	for i, x := range vals {
		if s, ok := x.(string); ok {
			str[i] = s
		} else {
			missing++
		}
	}
	if missing == len(vals) {
		return VersionInfo{}, fmt.Errorf("rules: version %d: %w", v, ErrNotFound)
	}
	info := VersionInfo{SHA256: str[1], Author: str[2], Note: str[5]}
	var err1, err2, err3 error
	info.Number, err1 = strconv.ParseInt(str[0], 10, 64)
	info.AppliedAt, err2 = time.Parse(time.RFC3339Nano, str[3])
	info.Previous, err3 = strconv.ParseInt(str[4], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || info.Number != v || len(info.SHA256) != 64 {
		return VersionInfo{}, fmt.Errorf("rules: version %d: %w: bad metadata", v, ErrCorrupt)
	}
	return info, nil
}

// Show returns version v's record and its YAML content as applied; v 0 means
// the current version. The content is checked against its hash and parsed:
// a version that does not match or no longer parses is ErrCorrupt.
func (s *RedisStore) Show(ctx context.Context, v int64) (VersionInfo, []byte, error) {
	if v == 0 {
		cur, err := s.LatestVersion(ctx)
		if err != nil {
			return VersionInfo{}, nil, err
		}
		if cur == 0 {
			return VersionInfo{}, nil, fmt.Errorf("rules: no version has been applied: %w", ErrNotFound)
		}
		v = cur
	}
	vals, err := s.client.HMGet(ctx, s.versionKey(v), append(infoFields, "content")...).Result()
	if err != nil {
		return VersionInfo{}, nil, redisErr(fmt.Sprintf("read version %d", v), err)
	}
	info, err := parseInfo(v, vals[:len(infoFields)])
	if err != nil {
		return VersionInfo{}, nil, err
	}
	content, ok := vals[len(infoFields)].(string)
	if !ok {
		return VersionInfo{}, nil, fmt.Errorf("rules: version %d: %w: no content", v, ErrCorrupt)
	}
	if Hash([]byte(content)) != info.SHA256 {
		return VersionInfo{}, nil, fmt.Errorf("rules: version %d: %w: content does not match its SHA-256", v, ErrCorrupt)
	}
	return info, []byte(content), nil
}

// Load returns version v (0: the current one), parsed, validated and compiled, with its version
// number set. A version that fails its hash or validation is ErrCorrupt (the
// *ValidationError is wrapped too).
func (s *RedisStore) Load(ctx context.Context, v int64) (*Ruleset, error) {
	info, content, err := s.Show(ctx, v)
	if err != nil {
		return nil, err
	}
	r, err := Parse(content)
	if err != nil {
		return nil, fmt.Errorf("rules: version %d: %w: %w", info.Number, ErrCorrupt, err)
	}
	r.SetVersion(info.Number)
	return r, nil
}

// History returns every version's record, newest first. Versions whose
// record is missing are left out.
func (s *RedisStore) History(ctx context.Context) ([]VersionInfo, error) {
	cur, err := s.LatestVersion(ctx)
	if err != nil || cur == 0 {
		return nil, err
	}
	cmds := make([]*redis.SliceCmd, 0, cur)
	_, err = s.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for v := cur; v >= 1; v-- {
			cmds = append(cmds, p.HMGet(ctx, s.versionKey(v), infoFields...))
		}
		return nil
	})
	if err != nil {
		return nil, redisErr("read history", err)
	}
	out := make([]VersionInfo, 0, len(cmds))
	for i, c := range cmds {
		info, err := parseInfo(cur-int64(i), c.Val())
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// applyScript writes a new version if the current one is still the base.
// KEYS: current, new version's key. ARGV: base, new number, sha256, author,
// applied_at, note, content, channel. Returns {1, new} or {0, current}.
var applyScript = redis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur ~= tonumber(ARGV[1]) or redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, cur}
end
redis.call('HSET', KEYS[2], 'number', ARGV[2], 'sha256', ARGV[3], 'author', ARGV[4],
  'applied_at', ARGV[5], 'previous', ARGV[1], 'note', ARGV[6], 'content', ARGV[7])
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[8], ARGV[2])
return {1, tonumber(ARGV[2])}
`)

// Apply validates content and writes it as a new version based on
// opts.Base, atomically: if another version became current meanwhile it is
// refused with ErrConflict and a message naming that version. An invalid
// ruleset is refused (a *ValidationError) before anything is written;
// content identical to the current version's is ErrUnchanged. Routers are
// told by pub/sub.
func (s *RedisStore) Apply(ctx context.Context, content []byte, opts ApplyOptions) (VersionInfo, error) {
	if _, err := Parse(content); err != nil {
		return VersionInfo{}, err
	}
	if opts.Author == "" {
		opts.Author = "unknown"
	}
	sum := Hash(content)
	if opts.Base > 0 {
		cur, err := s.client.HGet(ctx, s.versionKey(opts.Base), "sha256").Result()
		switch {
		case errors.Is(err, redis.Nil):
			// Checked by the script: the base is not current.
		case err != nil:
			return VersionInfo{}, redisErr("read base version", err)
		case cur == sum:
			if latest, err := s.LatestVersion(ctx); err == nil && latest == opts.Base {
				return VersionInfo{}, fmt.Errorf("rules: version %d already has this content: %w", opts.Base, ErrUnchanged)
			}
		}
	}
	info := VersionInfo{
		Number:    opts.Base + 1,
		SHA256:    sum,
		Author:    opts.Author,
		AppliedAt: time.Now().UTC(),
		Previous:  opts.Base,
		Note:      opts.Note,
	}
	res, err := applyScript.Run(ctx, s.client,
		[]string{s.currentKey(), s.versionKey(info.Number)},
		opts.Base, info.Number, info.SHA256, info.Author, info.AppliedAt.Format(time.RFC3339Nano),
		info.Note, content, s.rulesChannel()).Int64Slice()
	if err != nil {
		return VersionInfo{}, redisErr("apply", err)
	}
	if len(res) != 2 {
		return VersionInfo{}, fmt.Errorf("rules: apply: unexpected reply %v", res)
	}
	if res[0] == 1 {
		return info, nil
	}
	return VersionInfo{}, s.conflict(ctx, opts.Base, res[1])
}

// conflict builds the ErrConflict for a change based on base when cur is
// current.
func (s *RedisStore) conflict(ctx context.Context, base, cur int64) error {
	if base > cur {
		return fmt.Errorf("rules: refused: this change is based on version %d, but the current version is %d: %w", base, cur, ErrConflict)
	}
	by := ""
	if cur > 0 {
		if info, _, err := s.Show(ctx, cur); err == nil {
			by = fmt.Sprintf(" by %s at %s", info.Author, info.AppliedAt.Format(time.RFC3339))
		}
	}
	return fmt.Errorf("rules: refused: version %d was applied%s, but this change is based on version %d: %w; review what changed (`residency rules diff %d %d`), then retry with --expect-version %d",
		cur, by, base, ErrConflict, base, cur, cur)
}

// Rollback makes the content of version v current again, as a new version
// based on opts.Base (see Apply), noted "rollback to v".
func (s *RedisStore) Rollback(ctx context.Context, v int64, opts ApplyOptions) (VersionInfo, error) {
	_, content, err := s.Show(ctx, v)
	if err != nil {
		return VersionInfo{}, err
	}
	if opts.Note == "" {
		opts.Note = "rollback to " + strconv.FormatInt(v, 10)
	}
	return s.Apply(ctx, content, opts)
}

// Watch returns a channel that receives a value whenever a new version is
// announced, and when the subscription is (re-)established after a loss
// (announcements may have been missed). It is closed when ctx ends.
func (s *RedisStore) Watch(ctx context.Context) <-chan struct{} {
	out := make(chan struct{}, 1)
	go s.follow(ctx, s.rulesChannel(), func(string, bool) {
		select {
		case out <- struct{}{}:
		default:
		}
	}, func() { close(out) })
	return out
}

// follow subscribes to channel until ctx ends, calling fn with each message
// payload, and with reset true when the subscription is (re-)established.
// go-redis reconnects and resubscribes by itself.
func (s *RedisStore) follow(ctx context.Context, channel string, fn func(payload string, reset bool), done func()) {
	defer done()
	ps := s.client.Subscribe(ctx, channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelHealthCheckInterval(time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					fn("", true)
				}
			case *redis.Message:
				fn(m.Payload, false)
			}
		}
	}
}

// Pin is one per-user override.
type Pin struct {
	// UserID is the user's id as events carry it.
	UserID string `json:"user_id"`
	// Jurisdiction is the jurisdiction the user's events belong to,
	// whatever their country.
	Jurisdiction string `json:"jurisdiction"`
}

// Pin pins a user to a jurisdiction, which must exist in the current
// version, and tells every Pins cache.
func (s *RedisStore) Pin(ctx context.Context, userID, jurisdiction string) error {
	if userID == "" {
		return errors.New("rules: pin: empty user id")
	}
	r, err := s.Load(ctx, 0)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("rules: pin: no ruleset has been applied, so no jurisdiction exists yet: %w", err)
	}
	if err != nil {
		return err
	}
	if _, ok := r.Jurisdiction(jurisdiction); !ok {
		names := make([]string, len(r.Jurisdictions))
		for i, j := range r.Jurisdictions {
			names[i] = j.Name
		}
		return fmt.Errorf("rules: pin: jurisdiction %q is not in version %d (it has %s): %w", jurisdiction, r.Version(), strings.Join(names, ", "), ErrNotFound)
	}
	_, err = s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.pinsKey(), userID, jurisdiction)
		p.Publish(ctx, s.pinsChannel(), userID)
		return nil
	})
	if err != nil {
		return redisErr("pin", err)
	}
	return nil
}

// Unpin removes a user's pin and tells every Pins cache. A user who is not
// pinned is ErrNotFound.
func (s *RedisStore) Unpin(ctx context.Context, userID string) error {
	var del *redis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.HDel(ctx, s.pinsKey(), userID)
		p.Publish(ctx, s.pinsChannel(), userID)
		return nil
	})
	if err != nil {
		return redisErr("unpin", err)
	}
	if del.Val() == 0 {
		return fmt.Errorf("rules: unpin: the user is not pinned: %w", ErrNotFound)
	}
	return nil
}

// ListPins returns every pin, ordered by user id.
func (s *RedisStore) ListPins(ctx context.Context) ([]Pin, error) {
	var out []Pin
	iter := s.client.HScan(ctx, s.pinsKey(), 0, "", 1000).Iterator()
	for iter.Next(ctx) {
		user := iter.Val()
		if !iter.Next(ctx) {
			break
		}
		out = append(out, Pin{UserID: user, Jurisdiction: iter.Val()})
	}
	if err := iter.Err(); err != nil {
		return nil, redisErr("list pins", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}

// LookupPins returns the jurisdiction pinned for each user id ("" for none)
// in one round trip.
func (s *RedisStore) LookupPins(ctx context.Context, userIDs [][]byte) ([]string, error) {
	if len(userIDs) == 0 {
		return nil, nil
	}
	fields := make([]string, len(userIDs))
	for i, id := range userIDs {
		fields[i] = string(id)
	}
	vals, err := s.client.HMGet(ctx, s.pinsKey(), fields...).Result()
	if err != nil {
		return nil, redisErr("look up pins", err)
	}
	out := make([]string, len(userIDs))
	for i, v := range vals {
		if s, ok := v.(string); ok {
			out[i] = s
		}
	}
	return out, nil
}

// WatchPins returns a channel of pin changes: a user id whose pin changed,
// or All after the subscription is (re-)established. It is closed when ctx
// ends.
func (s *RedisStore) WatchPins(ctx context.Context) <-chan PinChange {
	out := make(chan PinChange, 64)
	go s.follow(ctx, s.pinsChannel(), func(payload string, reset bool) {
		select {
		case out <- PinChange{UserID: payload, All: reset}:
		case <-ctx.Done():
		}
	}, func() { close(out) })
	return out
}
