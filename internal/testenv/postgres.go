package testenv

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a PostgreSQL database schema private to one test.
type Postgres struct {
	// DSN connects to the database with search_path set to Schema.
	DSN string
	// Schema is the test's own schema, dropped when the test ends.
	Schema string
}

// NewPostgres creates a schema unique to this test in the dev stack's
// PostgreSQL and returns a DSN whose search_path points at it. PostgreSQL has
// no embedded stand-in: without the service the test is skipped under -short
// and fails otherwise, saying how to start it.
func NewPostgres(t testing.TB) *Postgres {
	t.Helper()
	base := required(t, EnvPostgres, "PostgreSQL")
	schema := Name(t, "t")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("testenv: PostgreSQL (%s) does not answer: %v; %s", EnvPostgres, err, startHint)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{schema}.Sanitize()); err != nil {
		t.Fatalf("testenv: create schema %s: %v", schema, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, base)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		_, _ = c.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{schema}.Sanitize()+" CASCADE")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("testenv: %s is not a URL: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return &Postgres{DSN: u.String(), Schema: schema}
}
