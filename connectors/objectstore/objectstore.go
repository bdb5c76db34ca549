// Package objectstore is the object-store store of a sink: Avro object
// container files (OCF) in a bucket opened through gocloud.dev/blob, under
// region/date/hour/.
//
// # Layout
//
// Each Write stores one object per (region, pinned-topic partition) of the
// batch, named
//
//	PREFIX REGION/YYYY-MM-DD/HH/TOPIC-PARTITION-FIRSTOFFSET.avro
//
// where the date and hour are those (UTC) of the first record's pinned-topic
// timestamp and FIRSTOFFSET is the offset of the first record, zero-padded
// to 20 digits so names sort by offset. Every record of the file is a
// StoredEvent (see Schema): the residency metadata, the event decoded as
// JSON and the original bytes.
//
// # Guarantees
//
// An object becomes visible whole or not at all: blob writers publish an
// object only when they are closed (fileblob writes a temporary file,
// syncs it and renames it into place; S3 PUTs are atomic). The sink commits
// offsets only after every object of the batch is written.
//
// Redelivery never adds a second copy: a batch starts, per partition, at
// the committed offset, so after a crash the batch is read again from the
// same first offset and its object is overwritten under the same name. If
// the redelivered batch is shorter, the object now holds a prefix of what it
// held, and the rest is stored by the next batch under the next name; if it
// is longer, the object holds more. Either way each offset ends up in
// exactly one object. What this does not cover: the same event_id
// republished by the router at another offset (a router crash between
// publish and commit) lands in two objects; readers that need uniqueness
// deduplicate on event_id (the PostgreSQL store does it by its key).
package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/linkedin/goavro/v2"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/s3blob"   // s3:// buckets (AWS and S3-compatible stores)

	"github.com/residency-router/residency/connectors/sink"
)

// ErrConfig marks an invalid configuration; the message names the field.
var ErrConfig = errors.New("objectstore: bad config")

// Schema is the Avro schema of every record in the object container files.
const Schema = `{
  "type": "record",
  "name": "StoredEvent",
  "namespace": "io.residency.sink",
  "doc": "One event as a residency sink stored it.",
  "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "user_id", "type": "string"},
    {"name": "jurisdiction", "type": "string"},
    {"name": "region", "type": "string"},
    {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "ruleset_version", "type": "string", "doc": "Version of the ruleset that placed the event."},
    {"name": "source_topic", "type": "string"},
    {"name": "source_partition", "type": "int"},
    {"name": "source_offset", "type": "long"},
    {"name": "topic", "type": "string", "doc": "The pinned topic the sink read."},
    {"name": "partition", "type": "int"},
    {"name": "offset", "type": "long"},
    {"name": "event", "type": "string", "doc": "The event decoded, as a JSON document."},
    {"name": "raw", "type": "bytes", "doc": "The pinned-topic record value, byte for byte (framing included)."}
  ]
}`

// Config configures a Store.
type Config struct {
	// URL is the bucket, as gocloud.dev/blob opens it: "file:///var/lib/x"
	// (add "?create_dir=true" to create the directory, "&no_tmp_dir=true"
	// if the system temp dir is on another file system) or
	// "s3://BUCKET?region=R" with, for S3-compatible stores such as Oracle
	// Object Storage or MinIO, "&endpoint=https://HOST&use_path_style=true";
	// S3 credentials come from the usual AWS environment and files.
	// Required.
	URL string `yaml:"url"`
	// Prefix is prepended to every object name, e.g. "events/". Default "".
	Prefix string `yaml:"prefix"`
	// Codec is the OCF block compression: "null", "deflate" or "snappy".
	// Default "deflate".
	Codec string `yaml:"codec"`
}

// Store writes sink records as OCF objects into one bucket. It is safe for
// concurrent use.
type Store struct {
	bucket *blob.Bucket
	prefix string
	codec  string
	cdc    *goavro.Codec
}

// Open validates cfg, opens the bucket and checks it can be reached.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.URL == "" {
		return nil, fmt.Errorf("%w: url: required", ErrConfig)
	}
	switch cfg.Codec {
	case "":
		cfg.Codec = goavro.CompressionDeflateLabel
	case goavro.CompressionNullLabel, goavro.CompressionDeflateLabel, goavro.CompressionSnappyLabel:
	default:
		return nil, fmt.Errorf("%w: codec: %q is not null, deflate or snappy", ErrConfig, cfg.Codec)
	}
	cdc, err := goavro.NewCodec(Schema)
	if err != nil {
		return nil, fmt.Errorf("objectstore: schema: %w", err)
	}
	b, err := blob.OpenBucket(ctx, cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: url: %v", ErrConfig, err)
	}
	if _, err := b.IsAccessible(ctx); err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("objectstore: bucket not accessible: %w", err)
	}
	return &Store{bucket: b, prefix: cfg.Prefix, codec: cfg.Codec, cdc: cdc}, nil
}

// Bucket returns the store's bucket (for tests and tools that read back).
func (s *Store) Bucket() *blob.Bucket { return s.bucket }

// Key returns the name of the object holding the records of one region and
// partition that start with first (see the package doc).
func (s *Store) Key(first *sink.Record) string {
	t := first.Time
	if t.IsZero() {
		t = first.OccurredAt
	}
	t = t.UTC()
	var b strings.Builder
	b.WriteString(s.prefix)
	b.WriteString(first.Region)
	b.WriteString(t.Format("/2006-01-02/15/"))
	b.WriteString(first.Topic)
	b.WriteByte('-')
	b.WriteString(strconv.Itoa(first.Partition))
	b.WriteByte('-')
	fmt.Fprintf(&b, "%020d", first.Offset)
	b.WriteString(".avro")
	return b.String()
}

// group is the records of one object.
type group struct {
	key     string
	records []*sink.Record
}

// Write stores batch as one OCF object per (region, topic, partition),
// overwriting objects of an earlier delivery of the same offsets.
func (s *Store) Write(ctx context.Context, batch []sink.Record) error {
	type gk struct {
		region, topic string
		part          int
	}
	idx := map[gk]int{}
	var groups []group
	for i := range batch {
		r := &batch[i]
		k := gk{r.Region, r.Topic, r.Partition}
		j, ok := idx[k]
		if !ok {
			j = len(groups)
			idx[k] = j
			groups = append(groups, group{key: s.Key(r)})
		}
		groups[j].records = append(groups[j].records, r)
	}
	for _, g := range groups {
		if err := s.put(ctx, g); err != nil {
			return err
		}
	}
	return nil
}

// put encodes and writes one object.
func (s *Store) put(ctx context.Context, g group) error {
	var buf bytes.Buffer
	first, last := g.records[0], g.records[len(g.records)-1]
	w, err := goavro.NewOCFWriter(goavro.OCFConfig{
		W:               &buf,
		Codec:           s.cdc,
		CompressionName: s.codec,
		MetaData: map[string][]byte{
			"residency.region":       []byte(first.Region),
			"residency.topic":        []byte(first.Topic),
			"residency.partition":    []byte(strconv.Itoa(first.Partition)),
			"residency.first_offset": []byte(strconv.FormatInt(first.Offset, 10)),
			"residency.last_offset":  []byte(strconv.FormatInt(last.Offset, 10)),
		},
	})
	if err != nil {
		return fmt.Errorf("objectstore: %s: %w", g.key, err)
	}
	natives := make([]any, len(g.records))
	for i, r := range g.records {
		natives[i] = map[string]any{
			"event_id":         r.EventID,
			"user_id":          r.UserID,
			"jurisdiction":     r.Jurisdiction,
			"region":           r.Region,
			"occurred_at":      r.OccurredAt,
			"ruleset_version":  r.RulesetVersion,
			"source_topic":     r.SourceTopic,
			"source_partition": r.SourcePartition,
			"source_offset":    r.SourceOffset,
			"topic":            r.Topic,
			"partition":        int32(r.Partition),
			"offset":           r.Offset,
			"event":            string(r.Event),
			"raw":              r.Raw,
		}
	}
	if err := w.Append(natives); err != nil {
		return fmt.Errorf("objectstore: %s: encoding: %w", g.key, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel() // on error, an unclosed writer is discarded
	var f *os.File
	bw, err := s.bucket.NewWriter(wctx, g.key, &blob.WriterOptions{
		ContentType: "application/avro",
		BeforeWrite: func(as func(any) bool) error {
			as(&f) // fileblob: the temporary file, synced before it is renamed
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("objectstore: %s: %w", g.key, err)
	}
	if _, err := bw.Write(buf.Bytes()); err != nil {
		cancel()
		_ = bw.Close()
		return fmt.Errorf("objectstore: %s: write: %w", g.key, err)
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			cancel()
			_ = bw.Close()
			return fmt.Errorf("objectstore: %s: sync: %w", g.key, err)
		}
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("objectstore: %s: %w", g.key, err)
	}
	return nil
}

// Close closes the bucket. Writes are synchronous, so there is nothing to
// wait for and ctx is not used.
func (s *Store) Close(context.Context) error {
	if err := s.bucket.Close(); err != nil {
		return fmt.Errorf("objectstore: close: %w", err)
	}
	return nil
}
