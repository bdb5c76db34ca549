package redis

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// Rules keeps the ruleset history (every applied version) and the per-user
// pins in Redis, every key under one prefix:
//
//	PREFIX rules:current    the current version number
//	PREFIX rules:v:N        version N (hash: content, sha256, author, ...)
//	PREFIX rules:changed    pub/sub channel: a new version number
//	PREFIX pins             hash: user id -> jurisdiction
//	PREFIX pins:changed     pub/sub channel: a user id whose pin changed
//
// It implements rules.History (and so rules.Source, what a rules.Cache
// follows) and rules.PinStore (what rules.Pins loads and follows). Apply,
// Rollback, Pin, Unpin, ListPins and Versions are for the `residency rules`
// commands.
type Rules struct {
	client goredis.UniversalClient
	prefix string
}

// NewRules returns the ruleset history and pins in client's Redis, every
// key under prefix (production uses rules.DefaultPrefix; tests use a prefix
// of their own).
func NewRules(client goredis.UniversalClient, prefix string) *Rules {
	return &Rules{client: client, prefix: prefix}
}

func (s *Rules) currentKey() string { return s.prefix + "rules:current" }
func (s *Rules) versionKey(v int64) string {
	return s.prefix + "rules:v:" + strconv.FormatInt(v, 10)
}
func (s *Rules) rulesChannel() string { return s.prefix + "rules:changed" }
func (s *Rules) pinsKey() string      { return s.prefix + "pins" }
func (s *Rules) pinsChannel() string  { return s.prefix + "pins:changed" }

// redisErr wraps an error from go-redis: network and timeout errors become
// rules.ErrUnavailable; replies from the server are kept as they are.
func redisErr(op string, err error) error {
	var reply goredis.Error
	if errors.As(err, &reply) && !strings.HasPrefix(err.Error(), "LOADING") {
		return fmt.Errorf("rules: %s: %w", op, err)
	}
	return fmt.Errorf("rules: %s: %w: %w", op, rules.ErrUnavailable, err)
}

// LatestVersion returns the current version number; 0 when none has been
// applied.
func (s *Rules) LatestVersion(ctx context.Context) (int64, error) {
	v, err := s.client.Get(ctx, s.currentKey()).Result()
	if errors.Is(err, goredis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, redisErr("read current version", err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("rules: current version %q: %w", v, rules.ErrCorrupt)
	}
	return n, nil
}

// Latest returns the current version's number and digest (its `sha256`);
// the zero Head when no version has been applied. A current version whose
// record has no digest is rules.ErrCorrupt.
func (s *Rules) Latest(ctx context.Context) (rules.Head, error) {
	v, err := s.LatestVersion(ctx)
	if err != nil || v == 0 {
		return rules.Head{}, err
	}
	sum, err := s.client.HGet(ctx, s.versionKey(v), "sha256").Result()
	if errors.Is(err, goredis.Nil) {
		return rules.Head{}, fmt.Errorf("rules: current version %d has no record: %w", v, rules.ErrCorrupt)
	}
	if err != nil {
		return rules.Head{}, redisErr(fmt.Sprintf("read version %d", v), err)
	}
	if len(sum) != 64 {
		return rules.Head{}, fmt.Errorf("rules: version %d: %w: bad sha256", v, rules.ErrCorrupt)
	}
	return rules.Head{Version: v, Digest: sum}, nil
}

var infoFields = []string{"number", "sha256", "author", "applied_at", "previous", "note"}

// parseInfo decodes a version's fields (in infoFields order).
func parseInfo(v int64, vals []any) (rules.VersionInfo, error) {
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
		return rules.VersionInfo{}, fmt.Errorf("rules: version %d: %w", v, rules.ErrNotFound)
	}
	info := rules.VersionInfo{SHA256: str[1], Author: str[2], Note: str[5]}
	var err1, err2, err3 error
	info.Number, err1 = strconv.ParseInt(str[0], 10, 64)
	info.AppliedAt, err2 = time.Parse(time.RFC3339Nano, str[3])
	info.Previous, err3 = strconv.ParseInt(str[4], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil || info.Number != v || len(info.SHA256) != 64 {
		return rules.VersionInfo{}, fmt.Errorf("rules: version %d: %w: bad metadata", v, rules.ErrCorrupt)
	}
	return info, nil
}

// Show returns version v's record and its YAML content as applied; v 0 means
// the current version. The content is checked against its hash and parsed:
// a version that does not match or no longer parses is rules.ErrCorrupt.
func (s *Rules) Show(ctx context.Context, v int64) (rules.VersionInfo, []byte, error) {
	if v == 0 {
		cur, err := s.LatestVersion(ctx)
		if err != nil {
			return rules.VersionInfo{}, nil, err
		}
		if cur == 0 {
			return rules.VersionInfo{}, nil, fmt.Errorf("rules: no version has been applied: %w", rules.ErrNotFound)
		}
		v = cur
	}
	vals, err := s.client.HMGet(ctx, s.versionKey(v), append(infoFields, "content")...).Result()
	if err != nil {
		return rules.VersionInfo{}, nil, redisErr(fmt.Sprintf("read version %d", v), err)
	}
	info, err := parseInfo(v, vals[:len(infoFields)])
	if err != nil {
		return rules.VersionInfo{}, nil, err
	}
	content, ok := vals[len(infoFields)].(string)
	if !ok {
		return rules.VersionInfo{}, nil, fmt.Errorf("rules: version %d: %w: no content", v, rules.ErrCorrupt)
	}
	if rules.Hash([]byte(content)) != info.SHA256 {
		return rules.VersionInfo{}, nil, fmt.Errorf("rules: version %d: %w: content does not match its SHA-256", v, rules.ErrCorrupt)
	}
	return info, []byte(content), nil
}

// Load returns version v (0: the current one), parsed, validated and compiled, with its version
// number set. A version that fails its hash or validation is rules.ErrCorrupt (the
// *ValidationError is wrapped too).
func (s *Rules) Load(ctx context.Context, v int64) (*rules.Ruleset, error) {
	info, content, err := s.Show(ctx, v)
	if err != nil {
		return nil, err
	}
	r, err := rules.Parse(content)
	if err != nil {
		return nil, fmt.Errorf("rules: version %d: %w: %w", info.Number, rules.ErrCorrupt, err)
	}
	r.SetVersion(info.Number)
	return r, nil
}

// Versions returns every version's record, newest first. Versions whose
// record is missing are left out.
func (s *Rules) Versions(ctx context.Context) ([]rules.VersionInfo, error) {
	cur, err := s.LatestVersion(ctx)
	if err != nil || cur == 0 {
		return nil, err
	}
	cmds := make([]*goredis.SliceCmd, 0, cur)
	_, err = s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
		for v := cur; v >= 1; v-- {
			cmds = append(cmds, p.HMGet(ctx, s.versionKey(v), infoFields...))
		}
		return nil
	})
	if err != nil {
		return nil, redisErr("read history", err)
	}
	out := make([]rules.VersionInfo, 0, len(cmds))
	for i, c := range cmds {
		info, err := parseInfo(cur-int64(i), c.Val())
		if errors.Is(err, rules.ErrNotFound) {
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
var applyScript = goredis.NewScript(`
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
// refused with rules.ErrConflict and a message naming that version. An invalid
// ruleset is refused (a *ValidationError) before anything is written;
// content identical to the current version's is rules.ErrUnchanged. Routers are
// told by pub/sub.
func (s *Rules) Apply(ctx context.Context, content []byte, opts rules.ApplyOptions) (rules.VersionInfo, error) {
	if _, err := rules.Parse(content); err != nil {
		return rules.VersionInfo{}, err
	}
	if opts.Author == "" {
		opts.Author = "unknown"
	}
	sum := rules.Hash(content)
	if opts.Base > 0 {
		cur, err := s.client.HGet(ctx, s.versionKey(opts.Base), "sha256").Result()
		switch {
		case errors.Is(err, goredis.Nil):
			// Checked by the script: the base is not current.
		case err != nil:
			return rules.VersionInfo{}, redisErr("read base version", err)
		case cur == sum:
			if latest, err := s.LatestVersion(ctx); err == nil && latest == opts.Base {
				return rules.VersionInfo{}, fmt.Errorf("rules: version %d already has this content: %w", opts.Base, rules.ErrUnchanged)
			}
		}
	}
	info := rules.VersionInfo{
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
		return rules.VersionInfo{}, redisErr("apply", err)
	}
	if len(res) != 2 {
		return rules.VersionInfo{}, fmt.Errorf("rules: apply: unexpected reply %v", res)
	}
	if res[0] == 1 {
		return info, nil
	}
	return rules.VersionInfo{}, s.conflict(ctx, opts.Base, res[1])
}

// restoreScript writes a version's record if it is absent (or, with
// replace, present with another sha256). KEYS: the version's key. ARGV:
// number, sha256, author, applied_at, previous, note, content, replace
// ("1" or "0"). Returns {1} when written, {0, sha256} when it was there
// with that sha256 and left.
var restoreScript = goredis.NewScript(`
local sum = redis.call('HGET', KEYS[1], 'sha256')
if sum and (sum == ARGV[2] or ARGV[8] ~= '1') then
  return {0, sum}
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'number', ARGV[1], 'sha256', ARGV[2], 'author', ARGV[3],
  'applied_at', ARGV[4], 'previous', ARGV[5], 'note', ARGV[6], 'content', ARGV[7])
return {1}
`)

// raiseScript moves the current version up to ARGV[1] if it is below and
// that version exists, and announces it. KEYS: current, the version's key.
// ARGV: number, channel. Returns the current version afterwards.
var raiseScript = goredis.NewScript(`
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local to = tonumber(ARGV[1])
if cur < to and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('PUBLISH', ARGV[2], ARGV[1])
  return to
end
return cur
`)

// RestoreVersions writes back the versions (from the history topic) that
// Redis lacks, each checked against its sha256 first, and returns the
// numbers written and the highest version given. It does not move the
// current version (RaiseCurrent does, once, at the end of a restore: no
// router ever sees an intermediate version become current). A version
// Redis holds with another content is left, and reported in an error
// wrapping rules.ErrContentChanged, unless replace is set: then it is
// overwritten.
func (s *Rules) RestoreVersions(ctx context.Context, versions []rules.Archived, replace bool) (written []int64, top int64, err error) {
	var conflicts []int64
	for _, a := range versions {
		info := a.Info
		if info.Number <= 0 || rules.Hash(a.Content) != info.SHA256 {
			return written, top, fmt.Errorf("rules: restore: version %d: %w: content does not match its SHA-256", info.Number, rules.ErrCorrupt)
		}
		if _, err := rules.Parse(a.Content); err != nil {
			return written, top, fmt.Errorf("rules: restore: version %d: %w: %w", info.Number, rules.ErrCorrupt, err)
		}
		flag := "0"
		if replace {
			flag = "1"
		}
		res, err := restoreScript.Run(ctx, s.client, []string{s.versionKey(info.Number)},
			info.Number, info.SHA256, info.Author, info.AppliedAt.UTC().Format(time.RFC3339Nano), info.Previous, info.Note, a.Content, flag).Slice()
		if err != nil {
			return written, top, redisErr(fmt.Sprintf("restore version %d", info.Number), err)
		}
		if n, _ := res[0].(int64); n == 1 {
			written = append(written, info.Number)
		} else if sum, _ := res[1].(string); sum != info.SHA256 {
			conflicts = append(conflicts, info.Number)
			continue
		}
		top = max(top, info.Number)
	}
	if len(conflicts) > 0 {
		return written, top, fmt.Errorf("rules: restore: %w: Redis holds other content than the history topic under version %v; left as it is (--replace overwrites it)",
			rules.ErrContentChanged, conflicts)
	}
	return written, top, nil
}

// RaiseCurrent makes version v current if the current version is below it
// and v exists, announcing it; it returns the current version afterwards.
func (s *Rules) RaiseCurrent(ctx context.Context, v int64) (int64, error) {
	cur, err := raiseScript.Run(ctx, s.client, []string{s.currentKey(), s.versionKey(v)}, v, s.rulesChannel()).Int64()
	if err != nil {
		return 0, redisErr("restore the current version", err)
	}
	return cur, nil
}

// Restore is RestoreVersions, then RaiseCurrent to the highest version
// given.
func (s *Rules) Restore(ctx context.Context, versions []rules.Archived, replace bool) ([]int64, error) {
	written, top, err := s.RestoreVersions(ctx, versions, replace)
	if top > 0 {
		if _, rerr := s.RaiseCurrent(ctx, top); rerr != nil {
			return written, rerr
		}
	}
	return written, err
}

// RestorePins sets the pins (from the history topic) of the users Redis
// has no pin for, and announces each on pins:changed, so that every
// rules.Pins takes them; a pin Redis holds is left as it is. It returns
// how many were set.
func (s *Rules) RestorePins(ctx context.Context, pins []rules.Pin) (int, error) {
	n := 0
	for len(pins) > 0 {
		page := pins[:min(len(pins), 1000)]
		pins = pins[len(page):]
		cmds := make([]*goredis.BoolCmd, len(page))
		_, err := s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, pin := range page {
				cmds[i] = p.HSetNX(ctx, s.pinsKey(), pin.UserID, pin.Jurisdiction)
			}
			return nil
		})
		if err != nil {
			return n, redisErr("restore pins", err)
		}
		_, err = s.client.Pipelined(ctx, func(p goredis.Pipeliner) error {
			for i, pin := range page {
				if cmds[i].Val() {
					n++
					p.Publish(ctx, s.pinsChannel(), pin.UserID)
				}
			}
			return nil
		})
		if err != nil {
			return n, redisErr("announce restored pins", err)
		}
	}
	return n, nil
}

// conflict builds the rules.ErrConflict for a change based on base when cur is
// current.
func (s *Rules) conflict(ctx context.Context, base, cur int64) error {
	if base > cur {
		return fmt.Errorf("rules: refused: this change is based on version %d, but the current version is %d: %w", base, cur, rules.ErrConflict)
	}
	by := ""
	if cur > 0 {
		if info, _, err := s.Show(ctx, cur); err == nil {
			by = fmt.Sprintf(" by %s at %s", info.Author, info.AppliedAt.Format(time.RFC3339))
		}
	}
	return fmt.Errorf("rules: refused: version %d was applied%s, but this change is based on version %d: %w; review what changed (`residency rules diff %d %d`), then retry with --expect-version %d",
		cur, by, base, rules.ErrConflict, base, cur, cur)
}

// Rollback makes the content of version v current again, as a new version
// based on opts.Base (see Apply), noted "rollback to v".
func (s *Rules) Rollback(ctx context.Context, v int64, opts rules.ApplyOptions) (rules.VersionInfo, error) {
	_, content, err := s.Show(ctx, v)
	if err != nil {
		return rules.VersionInfo{}, err
	}
	if opts.Note == "" {
		opts.Note = "rollback to " + strconv.FormatInt(v, 10)
	}
	return s.Apply(ctx, content, opts)
}

// Watch returns a channel that receives a value whenever a new version is
// announced, and when the subscription is (re-)established after a loss
// (announcements may have been missed). It is closed when ctx ends.
func (s *Rules) Watch(ctx context.Context) <-chan struct{} {
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
func (s *Rules) follow(ctx context.Context, channel string, fn func(payload string, reset bool), done func()) {
	defer done()
	ps := s.client.Subscribe(ctx, channel)
	defer ps.Close()
	ch := ps.ChannelWithSubscriptions(goredis.WithChannelHealthCheckInterval(time.Second))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *goredis.Subscription:
				if m.Kind == "subscribe" {
					fn("", true)
				}
			case *goredis.Message:
				fn(m.Payload, false)
			}
		}
	}
}

// Pin pins a user to a jurisdiction, which must exist in the current
// version, and tells every rules.Pins (announced on pins:changed in the
// same transaction).
func (s *Rules) Pin(ctx context.Context, userID, jurisdiction string) error {
	if userID == "" {
		return errors.New("rules: pin: empty user id")
	}
	r, err := s.Load(ctx, 0)
	if errors.Is(err, rules.ErrNotFound) {
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
		return fmt.Errorf("rules: pin: jurisdiction %q is not in version %d (it has %s): %w", jurisdiction, r.Version(), strings.Join(names, ", "), rules.ErrNotFound)
	}
	_, err = s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		p.HSet(ctx, s.pinsKey(), userID, jurisdiction)
		p.Publish(ctx, s.pinsChannel(), userID)
		return nil
	})
	if err != nil {
		return redisErr("pin", err)
	}
	return nil
}

// Unpin removes a user's pin and tells every rules.Pins. A user who is not
// pinned is rules.ErrNotFound.
func (s *Rules) Unpin(ctx context.Context, userID string) error {
	var del *goredis.IntCmd
	_, err := s.client.TxPipelined(ctx, func(p goredis.Pipeliner) error {
		del = p.HDel(ctx, s.pinsKey(), userID)
		p.Publish(ctx, s.pinsChannel(), userID)
		return nil
	})
	if err != nil {
		return redisErr("unpin", err)
	}
	if del.Val() == 0 {
		return fmt.Errorf("rules: unpin: the user is not pinned: %w", rules.ErrNotFound)
	}
	return nil
}

// ListPins returns every pin, ordered by user id.
func (s *Rules) ListPins(ctx context.Context) ([]rules.Pin, error) {
	var out []rules.Pin
	iter := s.client.HScan(ctx, s.pinsKey(), 0, "", 1000).Iterator()
	for iter.Next(ctx) {
		user := iter.Val()
		if !iter.Next(ctx) {
			break
		}
		out = append(out, rules.Pin{UserID: user, Jurisdiction: iter.Val()})
	}
	if err := iter.Err(); err != nil {
		return nil, redisErr("list pins", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].UserID < out[j].UserID })
	return out, nil
}

// LookupPins returns the jurisdiction pinned for each user id ("" for none)
// in one round trip.
func (s *Rules) LookupPins(ctx context.Context, userIDs [][]byte) ([]string, error) {
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

// CountPins returns how many pins there are (HLEN).
func (s *Rules) CountPins(ctx context.Context) (int, error) {
	n, err := s.client.HLen(ctx, s.pinsKey()).Result()
	if err != nil {
		return 0, redisErr("count pins", err)
	}
	return int(n), nil
}

// ScanPins returns one page of about count pins from cursor (HSCAN) and
// the next cursor, 0 after the last page. A pin present for the whole scan
// is returned at least once (Redis's guarantee).
func (s *Rules) ScanPins(ctx context.Context, cursor uint64, count int) ([]rules.Pin, uint64, error) {
	kv, next, err := s.client.HScan(ctx, s.pinsKey(), cursor, "", int64(count)).Result()
	if err != nil {
		return nil, 0, redisErr("read pins", err)
	}
	page := make([]rules.Pin, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		page = append(page, rules.Pin{UserID: kv[i], Jurisdiction: kv[i+1]})
	}
	return page, next, nil
}

// ProbeInterval is how often WatchPins probes its subscription (a PING on
// the subscribed connection, answered after every message published
// before it).
const ProbeInterval = time.Second

// WatchPins subscribes to pins:changed and reports, until ctx ends (then
// the channel is closed): every user id announced (rules.PinChanged), every
// (re-)subscription (rules.PinsSubscribed: changes may have been missed
// while it was down), every answered probe (rules.PinsAlive, with the
// time the probe was sent: every change announced before then has been
// reported) and the subscription breaking (rules.PinsLost, once per
// break, wrapping rules.ErrUnavailable for a connection problem). A probe is sent every ProbeInterval; a subscription that does
// not answer is dropped and made again (go-redis reconnects it).
func (s *Rules) WatchPins(ctx context.Context) <-chan rules.PinEvent {
	out := make(chan rules.PinEvent, 1024)
	go s.followPins(ctx, out)
	return out
}

// followPins is WatchPins' goroutine.
func (s *Rules) followPins(ctx context.Context, out chan<- rules.PinEvent) {
	defer close(out)
	var mu sync.Mutex
	ps := s.client.Subscribe(ctx, s.pinsChannel())
	probes := map[string]time.Time{} // payload -> when sent
	current := func() *goredis.PubSub {
		mu.Lock()
		defer mu.Unlock()
		return ps
	}
	go func() { // probes; and at the end, the subscription's close, which ends a receive in progress
		t := time.NewTicker(ProbeInterval)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-ctx.Done():
				mu.Lock()
				_ = ps.Close()
				mu.Unlock()
				return
			case <-t.C:
			}
			payload := "residency-probe-" + strconv.Itoa(n)
			mu.Lock()
			for p, at := range probes {
				if time.Since(at) > 10*ProbeInterval {
					delete(probes, p) // never answered
				}
			}
			probes[payload] = time.Now()
			mu.Unlock()
			pctx, cancel := context.WithTimeout(ctx, ProbeInterval)
			_ = current().Ping(pctx, payload) // a failure shows as a missing answer
			cancel()
		}
	}()
	send := func(e rules.PinEvent) bool {
		select {
		case out <- e:
			return true
		case <-ctx.Done():
			return false
		}
	}
	up := false // subscribed, as far as we know
	for ctx.Err() == nil {
		msg, err := current().ReceiveTimeout(ctx, 3*ProbeInterval)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if up {
				up = false
				if !send(rules.PinEvent{Kind: rules.PinsLost, Err: redisErr("pins subscription", err)}) {
					return
				}
			}
			// A broken connection is made again, with the subscription, by
			// the next receive. Probes not answered for so long mean a
			// connection that looks open but is not: make a new one.
			var nerr net.Error
			if errors.As(err, &nerr) && nerr.Timeout() {
				mu.Lock()
				_ = ps.Close()
				ps = s.client.Subscribe(ctx, s.pinsChannel())
				mu.Unlock()
			}
			stream.Sleep(ctx, 100*time.Millisecond)
			continue
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			if m.Kind == "subscribe" {
				up = true
				if !send(rules.PinEvent{Kind: rules.PinsSubscribed}) {
					return
				}
			}
		case *goredis.Message:
			if !send(rules.PinEvent{Kind: rules.PinChanged, UserID: m.Payload}) {
				return
			}
		case *goredis.Pong:
			mu.Lock()
			at, ok := probes[m.Payload]
			delete(probes, m.Payload)
			mu.Unlock()
			if ok && !send(rules.PinEvent{Kind: rules.PinsAlive, At: at}) {
				return
			}
		}
	}
}
