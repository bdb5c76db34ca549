package rules

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
