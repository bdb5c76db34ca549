package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/linkedin/goavro/v2"
	"gocloud.dev/blob"

	"github.com/residency-router/residency/erasure"
)

// This file makes the Store an erasure.Store and an erasure.RowStore:
// Erase rewrites the objects holding a user's records without them, Count
// counts them, Scan reads every record for the residue scan, HasEvents and
// EraseEvents find and remove given events (residue clean-up).
//
// # Erasure, atomically
//
// The layout has no index by user, so Erase reads every object of the
// store (every .avro object under the prefix, names of earlier versions
// included): its cost is a read of the whole store. An object holding
// records of the user is written again, under the same name, with every
// other record exactly as it was (same schema, codec and metadata, plus
// residency.erased_records, the count removed so far) and only the user's
// records left out. Writing an object is atomic on every bucket (fileblob
// writes a temporary file, syncs it and renames it over the old one; an S3
// PUT replaces the object whole), so a reader, or a crash at any point,
// sees the old object or the new one: never a half-written one, and never
// one without other users' records.
//
// The object keeps its name, so it keeps its span: the sink's redelivery
// check still finds those offsets held and does not store the user's
// records again. An object all of whose records were the user's stays as
// an object with no records, for the same reason. (Such an object no
// longer holds every offset of its span; that is what erasure means.)
//
// # Against concurrent writers
//
// The sink writes an object name only when no listed object holds its
// offsets, and then with the same records, so it never replaces an object
// an erasure rewrote, except in one race: a sink that listed the directory
// before the object existed (two members writing the same offsets at the
// same moment) may put back the whole object after the erasure rewrote it.
// The erasure marker closes it: such a write comes from a batch the sink
// checked before the marker was recorded, so it lands within the sink's
// write timeout, and erasure.Eraser erases everything a second time after
// waiting longer than that (Settle). Two erasures at once could each put
// back the other's user in an object both rewrite: erasure.Eraser holds a
// lock (erasure.LockName) while it erases.

var _ erasure.RowStore = (*Store)(nil)

// erasedMeta is the metadata key counting the records erasures removed
// from an object.
const erasedMeta = "residency.erased_records"

// ocfObject is one object read whole.
type ocfObject struct {
	key         string
	codec       *goavro.Codec
	compression string
	meta        map[string][]byte
	records     []map[string]any
}

// keys lists every .avro object of the store.
func (s *Store) keys(ctx context.Context) ([]string, error) {
	var out []string
	it := s.bucket.List(&blob.ListOptions{Prefix: s.prefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("objectstore: listing %q: %w", s.prefix, err)
		}
		if !obj.IsDir && strings.HasSuffix(obj.Key, ".avro") {
			out = append(out, obj.Key)
		}
	}
}

// read reads and decodes one object.
func (s *Store) read(ctx context.Context, key string) (*ocfObject, error) {
	data, err := s.bucket.ReadAll(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("objectstore: read %s: %w", key, err)
	}
	r, err := goavro.NewOCFReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("objectstore: %s is not an Avro object container file: %w", key, err)
	}
	o := &ocfObject{key: key, codec: r.Codec(), compression: r.CompressionName(), meta: r.MetaData()}
	for r.Scan() {
		v, err := r.Read()
		if err != nil {
			return nil, fmt.Errorf("objectstore: %s: record %d: %w", key, len(o.records), err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("objectstore: %s: record %d is not a record", key, len(o.records))
		}
		o.records = append(o.records, m)
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("objectstore: %s: %w", key, err)
	}
	return o, nil
}

// userOf returns a stored record's user id.
func userOf(m map[string]any) string {
	u, _ := m["user_id"].(string)
	return u
}

// rewrite writes o back under its name with only keep, atomically.
func (s *Store) rewrite(ctx context.Context, o *ocfObject, keep []any, removed int) error {
	meta := map[string][]byte{}
	for k, v := range o.meta {
		if !strings.HasPrefix(k, "avro.") { // the writer sets the schema and the codec
			meta[k] = v
		}
	}
	prev, _ := strconv.Atoi(string(meta[erasedMeta]))
	meta[erasedMeta] = []byte(strconv.Itoa(prev + removed))
	var buf bytes.Buffer
	w, err := goavro.NewOCFWriter(goavro.OCFConfig{W: &buf, Codec: o.codec, CompressionName: o.compression, MetaData: meta})
	if err != nil {
		return fmt.Errorf("objectstore: %s: %w", o.key, err)
	}
	if len(keep) > 0 {
		if err := w.Append(keep); err != nil {
			return fmt.Errorf("objectstore: %s: encoding: %w", o.key, err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel() // on error, an unclosed writer is discarded: the old object stays
	var f *os.File
	bw, err := s.bucket.NewWriter(wctx, o.key, &blob.WriterOptions{
		ContentType: "application/avro",
		BeforeWrite: func(as func(any) bool) error {
			as(&f) // fileblob: the temporary file, synced before it is renamed
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("objectstore: %s: %w", o.key, err)
	}
	if _, err := bw.Write(buf.Bytes()); err != nil {
		cancel()
		_ = bw.Close()
		return fmt.Errorf("objectstore: %s: write: %w", o.key, err)
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			cancel()
			_ = bw.Close()
			return fmt.Errorf("objectstore: %s: sync: %w", o.key, err)
		}
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("objectstore: %s: %w", o.key, err)
	}
	return nil
}

// Erase rewrites every object holding records of userID without them and
// returns how many records it removed (see the comment at the top of this
// file). An object that fails stops the erasure with an error naming it;
// the objects rewritten before stay rewritten, and running it again
// finishes the rest. An empty user id is refused (erasure.ErrEmptyUser).
func (s *Store) Erase(ctx context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, erasure.ErrEmptyUser
	}
	return s.eachObject(ctx, func(m map[string]any) bool { return userOf(m) == userID }, true)
}

// Count returns how many records of userID the store holds (a read of
// every object).
func (s *Store) Count(ctx context.Context, userID string) (int, error) {
	if userID == "" {
		return 0, erasure.ErrEmptyUser
	}
	return s.eachObject(ctx, func(m map[string]any) bool { return userOf(m) == userID }, false)
}

// EraseEvents rewrites every object holding records of the given event ids
// without them, as Erase does for a user, and returns how many records it
// removed (residue clean-up).
func (s *Store) EraseEvents(ctx context.Context, eventIDs []string) (int, error) {
	if len(eventIDs) == 0 {
		return 0, nil
	}
	ids := make(map[string]bool, len(eventIDs))
	for _, id := range eventIDs {
		ids[id] = true
	}
	return s.eachObject(ctx, func(m map[string]any) bool { id, _ := m["event_id"].(string); return ids[id] }, true)
}

// HasEvents returns which of eventIDs the store holds (a read of every
// object).
func (s *Store) HasEvents(ctx context.Context, eventIDs []string) (map[string]bool, error) {
	want := make(map[string]bool, len(eventIDs))
	for _, id := range eventIDs {
		want[id] = true
	}
	out := map[string]bool{}
	_, err := s.eachObject(ctx, func(m map[string]any) bool {
		if id, _ := m["event_id"].(string); want[id] {
			out[id] = true
		}
		return false
	}, false)
	return out, err
}

// eachObject counts the records of every object that match and, with
// erase, rewrites the objects holding any without them.
func (s *Store) eachObject(ctx context.Context, match func(map[string]any) bool, erase bool) (int, error) {
	keys, err := s.keys(ctx)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, k := range keys {
		o, err := s.read(ctx, k)
		if err != nil {
			return total, err
		}
		keep := make([]any, 0, len(o.records))
		for _, m := range o.records {
			if !match(m) {
				keep = append(keep, m)
			}
		}
		n := len(o.records) - len(keep)
		if n == 0 {
			continue
		}
		if erase {
			if err := s.rewrite(ctx, o, keep, n); err != nil {
				return total, err
			}
		}
		total += n
	}
	return total, nil
}

// Scan calls fn with every record of every object, object by object in
// name order; Row.Object names the object. It stops at fn's first error;
// an object that cannot be read stops it with an error naming the object.
func (s *Store) Scan(ctx context.Context, fn func(erasure.Row) error) error {
	keys, err := s.keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		o, err := s.read(ctx, k)
		if err != nil {
			return err
		}
		for _, m := range o.records {
			if err := fn(rowOf(k, m)); err != nil {
				return err
			}
		}
	}
	return nil
}

// rowOf turns a stored record into a Row.
func rowOf(key string, m map[string]any) erasure.Row {
	str := func(k string) string { v, _ := m[k].(string); return v }
	i64 := func(k string) int64 {
		switch v := m[k].(type) {
		case int64:
			return v
		case int32:
			return int64(v)
		case int:
			return int64(v)
		}
		return -1
	}
	r := erasure.Row{
		EventID: str("event_id"), UserID: str("user_id"), Jurisdiction: str("jurisdiction"), Region: str("region"),
		RulesetVersion: str("ruleset_version"), SourceTopic: str("source_topic"), SourcePartition: int32(i64("source_partition")),
		SourceOffset: i64("source_offset"), Topic: str("topic"), Partition: int(i64("partition")), Offset: i64("offset"),
		Object: key,
	}
	if t, ok := m["occurred_at"].(time.Time); ok {
		r.OccurredAt = t.UTC()
	}
	if ev, ok := m["event"].(string); ok {
		r.Event = []byte(ev)
	}
	return r
}
