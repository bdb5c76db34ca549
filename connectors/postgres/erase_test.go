package postgres_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/postgres"
	"github.com/residency-router/residency/erasure"
	"github.com/residency-router/residency/internal/testenv"
)

// snapshot returns every row but the written_at column, as text, keyed by
// event id.
func snapshot(t *testing.T, s *postgres.Store) map[string]string {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT event_id, to_jsonb(r) - 'written_at' FROM `+s.Table()+` r`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, doc string
		if err := rows.Scan(&id, &doc); err != nil {
			t.Fatal(err)
		}
		out[id] = doc
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func userIndex(t *testing.T, s *postgres.Store) (n int, valid, unique bool) {
	t.Helper()
	err := s.Pool().QueryRow(context.Background(), `
		SELECT count(*), coalesce(bool_and(i.indisvalid), false), coalesce(bool_or(i.indisunique), false)
		FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = $1::regclass AND a.attname = 'user_id'`, s.Table()).Scan(&n, &valid, &unique)
	if err != nil {
		t.Fatal(err)
	}
	return n, valid, unique
}

// TestEraseUser removes exactly one user's rows (other rows unchanged,
// byte for byte), counts them (building nothing), builds the user_id index
// when it erases, and is idempotent; an empty user id is refused.
func TestEraseUser(t *testing.T) {
	pg := testenv.NewPostgres(t)
	s := open(t, pg.DSN)
	ctx := testenv.Context(t, time.Minute)
	recs := records(0, 12)
	users := []string{"alice", "bob", "carol"}
	for i := range recs {
		recs[i].UserID = users[i%3]
	}
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
	if n, _, _ := userIndex(t, s); n != 0 {
		t.Fatalf("a user_id index before any erasure: %d", n)
	}
	if n, err := s.Count(ctx, "alice"); err != nil || n != 4 {
		t.Fatalf("Count(alice) = %d, %v", n, err)
	}
	// Counting (an erase --dry-run) changes nothing, not even the indexes.
	if n, _, _ := userIndex(t, s); n != 0 {
		t.Fatalf("Count built a user_id index (%d)", n)
	}
	n, err := s.Erase(ctx, "alice")
	if err != nil || n != 4 {
		t.Fatalf("Erase(alice) = %d, %v", n, err)
	}
	if n, valid, unique := userIndex(t, s); n != 1 || !valid || unique {
		t.Fatalf("user_id index: %d, valid %v, unique %v", n, valid, unique)
	}
	after := snapshot(t, s)
	if len(after) != 8 {
		t.Fatalf("%d rows left, want 8", len(after))
	}
	for i, r := range recs {
		got, ok := after[r.EventID]
		switch {
		case r.UserID == "alice" && ok:
			t.Errorf("row %d of alice is still there", i)
		case r.UserID != "alice" && got != before[r.EventID]:
			t.Errorf("row %d of %s changed:\n%s\n%s", i, r.UserID, before[r.EventID], got)
		}
	}
	if n, err := s.Erase(ctx, "alice"); err != nil || n != 0 {
		t.Fatalf("Erase(alice) again = %d, %v", n, err)
	}
	if n, err := s.Count(ctx, "alice"); err != nil || n != 0 {
		t.Fatalf("Count(alice) after = %d, %v", n, err)
	}
	if n, valid, _ := userIndex(t, s); n != 1 || !valid {
		t.Fatalf("user_id indexes after erasures: %d (valid %v), want one", n, valid)
	}
	if _, err := s.Erase(ctx, ""); !errors.Is(err, erasure.ErrEmptyUser) {
		t.Fatalf("Erase(\"\") = %v", err)
	}
	if _, err := s.Count(ctx, ""); !errors.Is(err, erasure.ErrEmptyUser) {
		t.Fatalf("Count(\"\") = %v", err)
	}
}

// TestEnsureUserIndexRebuildsInvalid: an index a failed concurrent build
// left invalid is dropped and built again; concurrent callers agree.
func TestEnsureUserIndexRebuildsInvalid(t *testing.T) {
	pg := testenv.NewPostgres(t)
	s := open(t, pg.DSN)
	ctx := testenv.Context(t, time.Minute)
	recs := records(0, 4)
	for i := range recs {
		recs[i].UserID = "same"
	}
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	// A unique build over duplicate user ids fails and leaves an invalid
	// index under the name EnsureUserIndex uses.
	if err := s.EnsureUserIndex(ctx); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := s.Pool().QueryRow(ctx, `SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
		WHERE i.indrelid = $1::regclass AND a.attname = 'user_id'`, s.Table()).Scan(&name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `DROP INDEX `+name); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pool().Exec(ctx, `CREATE UNIQUE INDEX CONCURRENTLY `+name+` ON `+s.Table()+` (user_id)`); err == nil {
		t.Fatal("a unique index over duplicates was built")
	}
	if n, valid, unique := userIndex(t, s); n != 1 || valid || !unique {
		t.Fatalf("setup: %d indexes, valid %v, unique %v; want one invalid unique index", n, valid, unique)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.EnsureUserIndex(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if n, valid, unique := userIndex(t, s); n != 1 || !valid || unique {
		t.Fatalf("after: %d indexes, valid %v, unique %v; want one valid plain index", n, valid, unique)
	}
	if n, err := s.Erase(ctx, "same"); err != nil || n != 4 {
		t.Fatalf("Erase = %d, %v", n, err)
	}
}

// TestScanRows hands over every row with what the residue scan needs.
func TestScanRows(t *testing.T) {
	pg := testenv.NewPostgres(t)
	s := open(t, pg.DSN)
	ctx := testenv.Context(t, time.Minute)
	recs := records(0, 5)
	recs[4].Event = nil // a row without a document
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	got := map[string]erasure.Row{}
	if err := s.Scan(ctx, func(r erasure.Row) error { got[r.EventID] = r; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("scanned %d rows", len(got))
	}
	for i, rec := range recs {
		r := got[rec.EventID]
		if r.UserID != rec.UserID || r.Jurisdiction != "US" || r.Region != "us" || r.RulesetVersion != "7" ||
			r.SourceTopic != "events" || r.SourcePartition != rec.SourcePartition || r.SourceOffset != rec.SourceOffset ||
			r.Topic != "residency.us" || r.Partition != rec.Partition || r.Offset != rec.Offset || !r.OccurredAt.Equal(rec.OccurredAt) {
			t.Errorf("row %d: %+v", i, r)
		}
		if i == 4 {
			if r.Event != nil {
				t.Errorf("row without a document: %s", r.Event)
			}
			continue
		}
		var doc map[string]any
		if err := json.Unmarshal(r.Event, &doc); err != nil || doc["user_id"] != rec.UserID {
			t.Errorf("row %d document %s: %v", i, r.Event, err)
		}
	}
	stop := errors.New("stop")
	n := 0
	if err := s.Scan(ctx, func(erasure.Row) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Scan stopped by fn: %v after %d", err, n)
	}
}

// TestEraseEvents looks up and removes given events by their key, for the
// residue clean-up; other rows stay.
func TestEraseEvents(t *testing.T) {
	pg := testenv.NewPostgres(t)
	s := open(t, pg.DSN)
	ctx := testenv.Context(t, time.Minute)
	recs := records(0, 6)
	if err := s.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, s)
	ids := []string{recs[1].EventID, recs[4].EventID, "no-such-event"}
	has, err := s.HasEvents(ctx, ids)
	if err != nil || len(has) != 2 || !has[recs[1].EventID] || !has[recs[4].EventID] {
		t.Fatalf("HasEvents = %v, %v", has, err)
	}
	if n, err := s.EraseEvents(ctx, ids); err != nil || n != 2 {
		t.Fatalf("EraseEvents = %d, %v", n, err)
	}
	after := snapshot(t, s)
	for i, r := range recs {
		_, ok := after[r.EventID]
		if gone := i == 1 || i == 4; gone == ok || (!gone && after[r.EventID] != before[r.EventID]) {
			t.Errorf("row %d: present %v", i, ok)
		}
	}
	if n, err := s.EraseEvents(ctx, nil); err != nil || n != 0 {
		t.Fatalf("EraseEvents(nil) = %d, %v", n, err)
	}
}
