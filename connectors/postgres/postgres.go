// Package postgres is the PostgreSQL store of a sink: one table, keyed on
// event_id, written in batches with COPY.
//
// Write is idempotent on event_id. A batch is first copied straight into the
// table (one COPY, atomic); if any of its event ids is already there (a
// redelivery after a crash), that COPY fails as a whole and the batch is
// written again through a temporary staging table with
// INSERT ... ON CONFLICT (event_id) DO NOTHING, in one transaction. So the
// common case costs one COPY, and a redelivered event never makes a second
// row.
package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/residency-router/residency/sink"
)

// ErrConfig marks an invalid configuration; the message names the field.
var ErrConfig = errors.New("postgres: bad config")

// ErrSchema is returned by Open when an existing table cannot be migrated
// (e.g. event_id is not its primary key).
var ErrSchema = errors.New("postgres: table does not fit")

// Defaults of Config.
const (
	// DefaultTable is the default of Config.Table.
	DefaultTable = "residency_events"
	// DefaultMaxConns is the default of Config.MaxConns.
	DefaultMaxConns = 4
	// DefaultConnectTimeout is the default of Config.ConnectTimeout.
	DefaultConnectTimeout = 30 * time.Second
)

// Config configures a Store.
type Config struct {
	// DSN is the pgx connection string (URL or key=value). Required.
	DSN string `yaml:"dsn" secret:"url"`
	// Table is the table written to, optionally schema-qualified
	// ("schema.table"). It is created, or missing columns are added, at
	// Open. Default "residency_events".
	Table string `yaml:"table"`
	// MaxConns is the size of the connection pool. Default 4.
	MaxConns int32 `yaml:"max_conns"`
	// ConnectTimeout bounds connecting and migrating at Open. Default 30s.
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
}

var tableName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// Store writes sink records into one PostgreSQL table. It is safe for
// concurrent use.
type Store struct {
	pool  *pgxpool.Pool
	table pgx.Identifier
	ident string // table, quoted
}

// columns are the table's columns that Write fills, in COPY order.
var columns = []string{
	"event_id", "user_id", "jurisdiction", "region", "occurred_at", "ruleset_version",
	"source_topic", "source_partition", "source_offset",
	"topic", "partition", "kafka_offset", "event", "raw",
}

// columnTypes are the SQL types of every column (written_at included), used
// to create and migrate the table.
var columnTypes = [][2]string{
	{"event_id", "text NOT NULL"},
	{"user_id", "text NOT NULL DEFAULT ''"},
	{"jurisdiction", "text NOT NULL DEFAULT ''"},
	{"region", "text NOT NULL DEFAULT ''"},
	{"occurred_at", "timestamptz"},
	{"ruleset_version", "text NOT NULL DEFAULT ''"},
	{"source_topic", "text NOT NULL DEFAULT ''"},
	{"source_partition", "integer NOT NULL DEFAULT -1"},
	{"source_offset", "bigint NOT NULL DEFAULT -1"},
	{"topic", "text NOT NULL DEFAULT ''"},
	{"partition", "integer NOT NULL DEFAULT -1"},
	{"kafka_offset", "bigint NOT NULL DEFAULT -1"},
	{"event", "jsonb"},
	{"raw", "bytea"},
	{"written_at", "timestamptz NOT NULL DEFAULT now()"},
}

// Validate checks cfg without connecting; each error wraps ErrConfig and
// names its field (dsn, table, max_conns, connect_timeout).
func (cfg Config) Validate() error {
	var errs []error
	if cfg.DSN == "" {
		errs = append(errs, fmt.Errorf("%w: dsn: required", ErrConfig))
	} else if _, err := pgxpool.ParseConfig(cfg.DSN); err != nil {
		errs = append(errs, fmt.Errorf("%w: dsn: %v", ErrConfig, err)) // %v: pgx redacts the password; do not wrap more
	}
	if cfg.Table != "" && !tableName.MatchString(cfg.Table) {
		errs = append(errs, fmt.Errorf("%w: table: %q is not a table name (letters, digits, _; optionally schema.table)", ErrConfig, cfg.Table))
	}
	if cfg.MaxConns < 0 {
		errs = append(errs, fmt.Errorf("%w: max_conns: must not be negative", ErrConfig))
	}
	if cfg.ConnectTimeout < 0 {
		errs = append(errs, fmt.Errorf("%w: connect_timeout: must not be negative", ErrConfig))
	}
	return errors.Join(errs...)
}

// Open connects, creates the table if it does not exist (or adds the
// columns an older version lacks) and returns the store.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	pc, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		return nil, fmt.Errorf("%w: dsn: %v", ErrConfig, err) // %v: the parse error may echo the password
	}
	pc.MaxConns = cfg.MaxConns
	ctx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	s := &Store{pool: pool, table: splitName(cfg.Table)}
	s.ident = s.table.Sanitize()
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func splitName(n string) pgx.Identifier {
	for i := 0; i < len(n); i++ {
		if n[i] == '.' {
			return pgx.Identifier{n[:i], n[i+1:]}
		}
	}
	return pgx.Identifier{n}
}

// migrate creates the table or adds missing columns, under an advisory lock
// so sinks starting together do not race.
func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('residency sink migrate ' || $1))`, s.ident); err != nil {
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	def := ""
	for _, c := range columnTypes {
		def += pgx.Identifier{c[0]}.Sanitize() + " " + c[1] + ", "
	}
	def += "PRIMARY KEY (event_id)"
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+s.ident+` (`+def+`)`); err != nil {
		return fmt.Errorf("postgres: migrate: create table %s: %w", s.ident, err)
	}
	for _, c := range columnTypes[1:] {
		if _, err := tx.Exec(ctx, `ALTER TABLE `+s.ident+` ADD COLUMN IF NOT EXISTS `+pgx.Identifier{c[0]}.Sanitize()+` `+c[1]); err != nil {
			return fmt.Errorf("postgres: migrate: add column %s to %s: %w", c[0], s.ident, err)
		}
	}
	var pk bool
	err = tx.QueryRow(ctx, `
		SELECT EXISTS (
		  SELECT 1 FROM pg_index i
		  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		  WHERE i.indrelid = $1::regclass AND i.indisunique AND i.indnkeyatts = 1 AND a.attname = 'event_id')`,
		s.ident).Scan(&pk)
	if err != nil {
		return fmt.Errorf("postgres: migrate: inspect %s: %w", s.ident, err)
	}
	if !pk {
		return fmt.Errorf("%w: %s has no unique key on event_id alone; writes could not be idempotent", ErrSchema, s.ident)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	return nil
}

// Table returns the quoted, possibly schema-qualified name of the table.
func (s *Store) Table() string { return s.ident }

// Pool returns the store's connection pool, for reading the table back
// (tests, tools).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Write stores batch durably and idempotently (see the package doc).
func (s *Store) Write(ctx context.Context, batch []sink.Record) error {
	if len(batch) == 0 {
		return nil
	}
	_, err := s.pool.CopyFrom(ctx, s.table, columns, &rows{batch: batch, i: -1})
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "23505" { // unique_violation
		return fmt.Errorf("postgres: copy into %s: %w", s.ident, err)
	}
	return s.upsert(ctx, batch)
}

// upsert writes batch through a staging table, skipping event ids that are
// already stored.
func (s *Store) upsert(ctx context.Context, batch []sink.Record) error {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: upsert into %s: %w", s.ident, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	staging := pgx.Identifier{"residency_sink_staging"}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE IF NOT EXISTS `+staging.Sanitize()+
		` (LIKE `+s.ident+` INCLUDING DEFAULTS) ON COMMIT DELETE ROWS`); err != nil {
		return fmt.Errorf("postgres: staging table: %w", err)
	}
	if _, err := tx.CopyFrom(ctx, staging, columns, &rows{batch: batch, i: -1}); err != nil {
		return fmt.Errorf("postgres: copy into staging: %w", err)
	}
	cols := ""
	for i, c := range columns {
		if i > 0 {
			cols += ", "
		}
		cols += pgx.Identifier{c}.Sanitize()
	}
	if _, err := tx.Exec(ctx, `INSERT INTO `+s.ident+` (`+cols+`) SELECT `+cols+` FROM `+staging.Sanitize()+
		` ON CONFLICT (event_id) DO NOTHING`); err != nil {
		return fmt.Errorf("postgres: insert into %s: %w", s.ident, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

// Close closes the pool, waiting for connections in use to be released or
// for ctx to end.
func (s *Store) Close(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.pool.Close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("postgres: close: %w", ctx.Err())
	}
}

// rows adapts a batch to pgx.CopyFromSource.
type rows struct {
	batch []sink.Record
	i     int
	vals  [14]any
}

func (r *rows) Next() bool {
	r.i++
	return r.i < len(r.batch)
}

func (r *rows) Values() ([]any, error) {
	rec := &r.batch[r.i]
	var occurred any
	if !rec.OccurredAt.IsZero() {
		occurred = rec.OccurredAt
	}
	r.vals = [14]any{
		rec.EventID, rec.UserID, rec.Jurisdiction, rec.Region, occurred, rec.RulesetVersion,
		rec.SourceTopic, rec.SourcePartition, rec.SourceOffset,
		rec.Topic, int32(rec.Partition), rec.Offset, jsonDoc(rec.Event), rec.Raw,
	}
	return r.vals[:], nil
}

func (r *rows) Err() error { return nil }

// jsonDoc is a JSON document for a jsonb column (nil for SQL NULL).
// PostgreSQL's jsonb cannot hold U+0000, which the JSON rendering of Avro
// bytes and fixed values (code points 0-255) produces for zero bytes: each
// \u0000 escape becomes \ufffd. The raw column keeps the exact bytes.
func jsonDoc(b []byte) any {
	if b == nil {
		return nil
	}
	if bytes.Contains(b, nulEscape) {
		return replaceNul(b)
	}
	return b
}

var nulEscape = []byte(`\u0000`)

// replaceNul returns doc with every \u0000 escape (not an escaped backslash
// followed by "u0000") replaced by \ufffd.
func replaceNul(doc []byte) []byte {
	out := make([]byte, 0, len(doc))
	for i := 0; i < len(doc); i++ {
		c := doc[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		// An escape: copy it whole, rewriting \u0000.
		if i+5 < len(doc) && string(doc[i:i+6]) == `\u0000` {
			out = append(out, `\ufffd`...)
			i += 5
			continue
		}
		out = append(out, c)
		if i+1 < len(doc) {
			out = append(out, doc[i+1])
			i++
		}
	}
	return out
}
