package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/residency-router/residency/erasure"
)

// This file makes the Store an erasure.Store and an erasure.RowStore: Erase
// removes one user's rows, Count counts them, Scan reads every row for the
// residue scan, HasEvents and EraseEvents find and remove given events by
// their key (residue clean-up).
//
// Erase is one DELETE ... WHERE user_id = $1: one statement, so atomic (all
// of the user's rows at that moment, or none), and it touches no other
// row. The table has a user_id column since its first version; an index on
// it is created when Erase or Count first needs it (EnsureUserIndex),
// CONCURRENTLY, so that sinks keep writing while it is built.

var _ erasure.RowStore = (*Store)(nil)

// userIndexName is the name of the index on user_id: derived from the
// table's name (within the 63 bytes PostgreSQL allows).
func (s *Store) userIndexName() string {
	h := sha256.Sum256([]byte(s.ident))
	return "residency_user_id_" + hex.EncodeToString(h[:8])
}

// EnsureUserIndex creates the index on user_id that Erase and Count use,
// if it does not exist, without blocking writes (CREATE INDEX
// CONCURRENTLY); an index a failed build left invalid is dropped and built
// again. Concurrent callers wait for each other (an advisory lock). It
// needs the table's owner privileges; without them Erase and Count still
// work, scanning the table.
func (s *Store) EnsureUserIndex(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: user index: %w", err)
	}
	defer conn.Release()
	lock := "residency user index " + s.ident
	// Try, do not wait inside the statement: a session waiting in
	// pg_advisory_lock is a transaction CREATE INDEX CONCURRENTLY waits
	// for, which would deadlock with the lock holder.
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtext($1))`, lock).Scan(&got); err != nil {
			return fmt.Errorf("postgres: user index: lock: %w", err)
		}
		if got {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("postgres: user index: lock: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(hashtext($1))`, lock)
	}()
	name := s.userIndexName()
	var schema string
	var valid *bool
	err = conn.QueryRow(ctx, `
		SELECT n.nspname,
		       (SELECT i.indisvalid FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
		        WHERE i.indrelid = c.oid AND ic.relname = $2)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.oid = $1::regclass`, s.ident, name).Scan(&schema, &valid)
	if err != nil {
		return fmt.Errorf("postgres: user index of %s: %w", s.ident, err)
	}
	qualified := pgx.Identifier{schema, name}.Sanitize()
	if valid != nil && *valid {
		return nil
	}
	if valid != nil { // left invalid by an interrupted build
		if _, err := conn.Exec(ctx, `DROP INDEX CONCURRENTLY IF EXISTS `+qualified); err != nil {
			return fmt.Errorf("postgres: drop invalid index %s: %w", qualified, err)
		}
	}
	if _, err := conn.Exec(ctx, `CREATE INDEX CONCURRENTLY IF NOT EXISTS `+pgx.Identifier{name}.Sanitize()+` ON `+s.ident+` (user_id)`); err != nil {
		return fmt.Errorf("postgres: create index %s: %w", qualified, err)
	}
	return nil
}

// prepareErase makes sure the user index exists (a catalogue lookup when
// it does: erasures are rare); a failure is logged and the statements run
// without it.
func (s *Store) prepareErase(ctx context.Context) {
	if err := s.EnsureUserIndex(ctx); err != nil && ctx.Err() == nil {
		slog.Warn("postgres: no index on user_id; erasures scan the table", "table", s.ident, "error", err)
	}
}

// Erase deletes every row of userID and returns how many it deleted. An
// empty user id is refused (erasure.ErrEmptyUser).
func (s *Store) Erase(ctx context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, erasure.ErrEmptyUser
	}
	s.prepareErase(ctx)
	tag, err := s.pool.Exec(ctx, `DELETE FROM `+s.ident+` WHERE user_id = $1`, userID)
	if err != nil {
		return 0, fmt.Errorf("postgres: erase from %s: %w", s.ident, err)
	}
	return int(tag.RowsAffected()), nil
}

// Count returns how many rows of userID the table holds. It changes
// nothing, not even the indexes (an erase --dry-run counts): without the
// user_id index Erase builds, it scans the table.
func (s *Store) Count(ctx context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, erasure.ErrEmptyUser
	}
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM `+s.ident+` WHERE user_id = $1`, userID).Scan(&n); err != nil {
		return 0, fmt.Errorf("postgres: count in %s: %w", s.ident, err)
	}
	return n, nil
}

// EraseEvents deletes the rows of the given event ids (by the primary key)
// and returns how many it deleted.
func (s *Store) EraseEvents(ctx context.Context, eventIDs []string) (int, error) {
	total := 0
	for start := 0; start < len(eventIDs); start += 10000 {
		ids := eventIDs[start:min(start+10000, len(eventIDs))]
		tag, err := s.pool.Exec(ctx, `DELETE FROM `+s.ident+` WHERE event_id = ANY($1)`, ids)
		if err != nil {
			return total, fmt.Errorf("postgres: erase events from %s: %w", s.ident, err)
		}
		total += int(tag.RowsAffected())
	}
	return total, nil
}

// HasEvents returns which of eventIDs the table holds.
func (s *Store) HasEvents(ctx context.Context, eventIDs []string) (map[string]bool, error) {
	out := map[string]bool{}
	for start := 0; start < len(eventIDs); start += 10000 {
		ids := eventIDs[start:min(start+10000, len(eventIDs))]
		rows, err := s.pool.Query(ctx, `SELECT event_id FROM `+s.ident+` WHERE event_id = ANY($1)`, ids)
		if err != nil {
			return nil, fmt.Errorf("postgres: look up events in %s: %w", s.ident, err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("postgres: look up events in %s: %w", s.ident, err)
			}
			out[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("postgres: look up events in %s: %w", s.ident, err)
		}
	}
	return out, nil
}

// Scan calls fn with every row of the table, in no particular order,
// streaming (one query; rows are read as fn consumes them). It stops at
// fn's first error and returns it.
func (s *Store) Scan(ctx context.Context, fn func(erasure.Row) error) error {
	rows, err := s.pool.Query(ctx, `SELECT event_id, user_id, jurisdiction, region, ruleset_version,
		source_topic, source_partition, source_offset, topic, partition, kafka_offset, occurred_at, event::text
		FROM `+s.ident)
	if err != nil {
		return fmt.Errorf("postgres: scan %s: %w", s.ident, err)
	}
	defer rows.Close()
	for rows.Next() {
		var r erasure.Row
		var part int32
		var occurred *time.Time
		var event *string
		if err := rows.Scan(&r.EventID, &r.UserID, &r.Jurisdiction, &r.Region, &r.RulesetVersion,
			&r.SourceTopic, &r.SourcePartition, &r.SourceOffset, &r.Topic, &part, &r.Offset, &occurred, &event); err != nil {
			return fmt.Errorf("postgres: scan %s: %w", s.ident, err)
		}
		r.Partition = int(part)
		if occurred != nil {
			r.OccurredAt = occurred.UTC()
		}
		if event != nil {
			r.Event = []byte(*event)
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("postgres: scan %s: %w", s.ident, err)
	}
	return rows.Err()
}
