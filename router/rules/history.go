package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"time"
)

// DefaultPrefix is the key prefix production uses for everything residency
// keeps in Redis.
const DefaultPrefix = "residency:"

// DefaultHistoryTopic is the default name of the ruleset history topic, the
// compacted topic on the ingest cluster that keeps every applied version
// outside Redis (config rules.history_topic).
const DefaultHistoryTopic = "residency.rules-history"

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

// Hash returns the hex SHA-256 of ruleset content, as VersionInfo.SHA256.
func Hash(content []byte) string {
	sum := sha256.Sum256(content)
	return hex.EncodeToString(sum[:])
}

// Pin is one per-user override.
type Pin struct {
	// UserID is the user's id as events carry it.
	UserID string `json:"user_id"`
	// Jurisdiction is the jurisdiction the user's events belong to,
	// whatever their country.
	Jurisdiction string `json:"jurisdiction"`
}

// History is the applied versions of the ruleset, kept outside the process
// (connectors/redis.Rules keeps them in Redis): what a Cache follows (its
// Source) and what replay plans against. Versions are immutable: a change,
// and a rollback, is a new version.
type History interface {
	Source
	// Show returns version v's record and its content as applied; v 0
	// means the current version. A version that does not exist is
	// ErrNotFound, one whose content fails its hash ErrCorrupt, and a
	// store that cannot be reached ErrUnavailable.
	Show(ctx context.Context, v int64) (VersionInfo, []byte, error)
}

// Archived is one applied version as the history topic keeps it: its
// record and its content as applied.
type Archived struct {
	// Info is the version's record (Info.SHA256 is the digest of Content).
	Info VersionInfo `json:"info"`
	// Content is the YAML as applied.
	Content []byte `json:"content"`
}

// Archive is the durable copy of the ruleset history, and of the pins,
// outside Redis, so that a version number never names two contents and no
// pin is lost even if Redis loses its data: the compacted ruleset history
// topic on the ingest cluster (connectors/kafka.HistoryTopic). `rules
// apply` and `rollback` write each new version to it, `rules pin` and
// `unpin` each pin; `rules restore` copies it back into Redis.
type Archive interface {
	// ReadVersions returns every version archived, by number then time of
	// apply. A number archived with two digests (re-applied after Redis
	// lost its data, without the archive) is returned twice.
	ReadVersions(ctx context.Context) ([]Archived, error)
	// WriteVersions archives versions durably (written again, a version is
	// kept once).
	WriteVersions(ctx context.Context, versions ...Archived) error
	// ReadPins returns every pin archived, by user id.
	ReadPins(ctx context.Context) ([]Pin, error)
	// WritePins archives pins durably; a pin with no jurisdiction removes
	// the user's pin from the archive.
	WritePins(ctx context.Context, pins ...Pin) error
}

// HistoryCheck compares Redis's ruleset history with the archive's.
type HistoryCheck struct {
	// RedisCurrent is Redis's current version number (0: none).
	RedisCurrent int64
	// ArchiveHighest is the highest version number archived (0: none).
	ArchiveHighest int64
	// Missing are the archived versions Redis does not have, ascending
	// (of a number archived with two contents, the one applied first).
	Missing []Archived
	// Unarchived are the version numbers Redis has and the archive does
	// not (applied without it), ascending.
	Unarchived []int64
	// Conflicts are the version numbers whose content in Redis is not the
	// first content archived under that number (the one in force before
	// Redis lost its data), ascending.
	Conflicts []int64
}

// CompareHistory compares Redis's versions (records, any order) with the
// archive's (as ReadVersions returns them: by number, then time of apply).
// Of a number archived with two contents, the first applied is the one
// that counts: the other was applied after Redis lost its data, without
// the archive, and is kept there only as a record.
func CompareHistory(redisCurrent int64, inRedis []VersionInfo, archived []Archived) HistoryCheck {
	c := HistoryCheck{RedisCurrent: redisCurrent}
	byNumber := map[int64][]Archived{}
	for _, a := range archived {
		byNumber[a.Info.Number] = append(byNumber[a.Info.Number], a)
		c.ArchiveHighest = max(c.ArchiveHighest, a.Info.Number)
	}
	have := map[int64]string{}
	for _, v := range inRedis {
		have[v.Number] = v.SHA256
	}
	for n := int64(1); n <= max(c.ArchiveHighest, redisCurrent); n++ {
		as, sum := byNumber[n], have[n]
		_, inR := have[n]
		switch {
		case len(as) == 0 && inR:
			c.Unarchived = append(c.Unarchived, n)
		case len(as) > 0 && !inR:
			c.Missing = append(c.Missing, as[0])
		case len(as) > 0 && as[0].Info.SHA256 != sum:
			c.Conflicts = append(c.Conflicts, n)
		}
	}
	return c
}

// Err says why a new version must not be applied on top of Redis as it is
// (nil when it may): Redis behind the archive (ErrHistoryLost: Redis lost
// its data; `rules restore` first), or a version number naming other
// content in Redis than in the archive (ErrContentChanged).
func (c HistoryCheck) Err() error {
	switch {
	case len(c.Conflicts) > 0:
		return fmt.Errorf("rules: %w: version %s has other content in Redis than in the history topic (applied again after Redis lost its data?): "+
			"see docs/rules.md, \"Redis lost its data\"", ErrContentChanged, joinNumbers(c.Conflicts))
	case c.RedisCurrent < c.ArchiveHighest:
		return fmt.Errorf("rules: %w: Redis lost ruleset history: Redis at %d, history at %d: run `residency rules restore` "+
			"(copies every version from the history topic back into Redis), then apply", ErrHistoryLost, c.RedisCurrent, c.ArchiveHighest)
	case len(c.Missing) > 0:
		return fmt.Errorf("rules: %w: Redis lacks version %s of the history topic: run `residency rules restore`", ErrHistoryLost, joinNumbers(versionsOf(c.Missing)))
	}
	return nil
}

func versionsOf(as []Archived) []int64 {
	out := make([]int64, len(as))
	for i, a := range as {
		out[i] = a.Info.Number
	}
	return out
}

// joinNumbers writes version numbers for a message: "3", "3 and 5", "3,
// 4 and 5".
func joinNumbers(ns []int64) string {
	s := ""
	for i, n := range ns {
		switch {
		case i == 0:
		case i == len(ns)-1:
			s += " and "
		default:
			s += ", "
		}
		s += strconv.FormatInt(n, 10)
	}
	return s
}
