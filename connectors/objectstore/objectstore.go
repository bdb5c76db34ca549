// Package objectstore is the object-store store of a sink: Avro object
// container files (OCF) in a bucket opened through gocloud.dev/blob, under
// region/date/hour/.
//
// # Layout
//
// Each Write stores one object per run of consecutive offsets of one
// (region, pinned-topic partition, hour) of the batch, named
//
//	PREFIX REGION/YYYY-MM-DD/HH/TOPIC-PARTITION-FIRST-LAST.avro
//
// where FIRST and LAST are the offsets of the object's first and last
// records, zero-padded to 20 digits so names sort by offset, and the object
// holds every offset from FIRST to LAST (an offset the sink does not write,
// such as a quarantined event, ends one object and the next starts after
// it). The date and hour are those (UTC) of each record's own pinned-topic
// timestamp (its occurred_at if it has none): a batch that crosses an hour
// becomes one object per hour, and an offset always lands in the same
// directory however the batches around it are cut. Every record of the file
// is a StoredEvent (see Schema): the residency metadata, the event decoded
// as JSON and the original bytes.
//
// # Guarantees
//
// An object becomes visible whole or not at all: blob writers publish an
// object only when they are closed (fileblob writes a temporary file,
// syncs it and renames it into place; S3 PUTs are atomic). The sink commits
// offsets only after every object of the batch is written.
//
// No write ever removes an offset. Two objects share a name only if they
// hold the same offsets, and then the same records, so an overwrite (the
// same run written again) replaces records with themselves. A writer that
// lost its partition in a rebalance and writes late (member A retrying
// 100-149 after member B stored 100-199 and committed) cannot replace B's
// object.
//
// Redelivery does not duplicate: before writing a run, Write lists the
// partition's objects in the run's directory (prefix TOPIC-PARTITION-) and
// writes only the offsets no object holds, nothing if all are held. A batch
// read again after a crash, shorter or longer, or a stale writer's batch
// that another member already stored, therefore adds only what is missing,
// and each offset ends up in exactly one object.
//
// Where duplicates remain (never a loss): two members writing overlapping
// offsets at the same moment, each listing before the other's object is
// visible, both write; their objects have different names (or the same
// name and the same records), so the overlap is stored twice. Objects named
// by earlier versions (TOPIC-PARTITION-FIRST.avro) are not read when
// listing and never overwritten, so a redelivery of their offsets after an
// upgrade is stored again. The same event_id republished by the router at
// another offset (a router crash between publish and commit) lands in two
// objects too. Readers that need uniqueness deduplicate on event_id (the
// PostgreSQL store does it by its key).
//
// Cost: one LIST per (directory, partition) per Write besides the PUTs; a
// LIST returns up to 1000 names per request on S3, so very many objects per
// partition and hour (small batches) make it slower.
package objectstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/linkedin/goavro/v2"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/s3blob"   // s3:// buckets (AWS and S3-compatible stores)

	"github.com/residency-router/residency/sink"
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

// DefaultCodec is the default of Config.Codec.
const DefaultCodec = goavro.CompressionDeflateLabel

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

// Validate checks cfg without opening the bucket; each error wraps
// ErrConfig and names its field (url, codec).
func (cfg Config) Validate() error {
	var errs []error
	if cfg.URL == "" {
		errs = append(errs, fmt.Errorf("%w: url: required", ErrConfig))
	} else if u, err := url.Parse(cfg.URL); err != nil || u.Scheme == "" || !blob.DefaultURLMux().ValidBucketScheme(u.Scheme) {
		errs = append(errs, fmt.Errorf("%w: url: %q is not a bucket URL (file:///DIR or s3://BUCKET?region=R)", ErrConfig, cfg.URL))
	}
	switch cfg.Codec {
	case "", goavro.CompressionNullLabel, goavro.CompressionDeflateLabel, goavro.CompressionSnappyLabel:
	default:
		errs = append(errs, fmt.Errorf("%w: codec: %q is not null, deflate or snappy", ErrConfig, cfg.Codec))
	}
	return errors.Join(errs...)
}

// Open validates cfg, opens the bucket and checks it can be reached.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Codec == "" {
		cfg.Codec = DefaultCodec
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
// pinned-topic partition from first to last, offsets first.Offset to
// last.Offset without a gap, all in the hour of first's timestamp (see the
// package doc).
func (s *Store) Key(first, last *sink.Record) string {
	var b strings.Builder
	b.WriteString(s.partitionPrefix(first))
	fmt.Fprintf(&b, "%020d-%020d", first.Offset, last.Offset)
	b.WriteString(".avro")
	return b.String()
}

// dir returns the directory of r's object: prefix, region, and the UTC date
// and hour of r's pinned-topic timestamp (its occurred_at when the record
// has none). Both are fixed for an offset, so every delivery of an offset
// puts it in the same directory.
func (s *Store) dir(r *sink.Record) string {
	t := r.Time
	if t.IsZero() {
		t = r.OccurredAt
	}
	return s.prefix + r.Region + t.UTC().Format("/2006-01-02/15/")
}

// partitionPrefix returns the common start of the names of r's partition's
// objects in r's directory: DIR TOPIC-PARTITION-.
func (s *Store) partitionPrefix(r *sink.Record) string {
	return s.dir(r) + r.Topic + "-" + strconv.Itoa(r.Partition) + "-"
}

// span is the offsets an object holds, first to last inclusive.
type span struct{ first, last int64 }

// parseSpan reads FIRST-LAST.avro, the end of an object name after its
// partition prefix; ok is false for anything else (objects of another
// topic whose name shares the prefix, names of older versions).
func parseSpan(rest string) (span, bool) {
	const digits = 20
	if len(rest) != 2*digits+len("-.avro") || rest[digits] != '-' || !strings.HasSuffix(rest, ".avro") {
		return span{}, false
	}
	f, err1 := strconv.ParseInt(rest[:digits], 10, 64)
	l, err2 := strconv.ParseInt(rest[digits+1:2*digits+1], 10, 64)
	if err1 != nil || err2 != nil || f < 0 || l < f {
		return span{}, false
	}
	return span{f, l}, true
}

// group is the records of one object: one region, topic, partition and
// hour, consecutive offsets.
type group struct {
	prefix  string // partitionPrefix of its records
	records []*sink.Record
}

// runs splits batch into groups of consecutive offsets of one region,
// topic, partition and directory, in batch order.
func (s *Store) runs(batch []sink.Record) []group {
	type tp struct {
		topic string
		part  int
	}
	open := map[tp]int{} // the partition's group still growing
	var groups []group
	for i := range batch {
		r := &batch[i]
		prefix := s.partitionPrefix(r)
		k := tp{r.Topic, r.Partition}
		if j, ok := open[k]; ok {
			g := &groups[j]
			if g.prefix == prefix && g.records[len(g.records)-1].Offset+1 == r.Offset {
				g.records = append(g.records, r)
				continue
			}
		}
		open[k] = len(groups)
		groups = append(groups, group{prefix: prefix, records: []*sink.Record{r}})
	}
	return groups
}

// stored lists the spans of the objects under prefix (one partition's
// objects in one directory).
func (s *Store) stored(ctx context.Context, prefix string) ([]span, error) {
	var out []span
	it := s.bucket.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("objectstore: listing %s: %w", prefix, err)
		}
		if sp, ok := parseSpan(strings.TrimPrefix(obj.Key, prefix)); ok {
			out = append(out, sp)
		}
	}
}

// uncovered returns the parts of g whose offsets no span holds, each a
// group of consecutive offsets.
func uncovered(g group, spans []span) []group {
	var out []group
	var cur *group
	for _, r := range g.records {
		held := false
		for _, sp := range spans {
			if sp.first <= r.Offset && r.Offset <= sp.last {
				held = true
				break
			}
		}
		if held {
			cur = nil
			continue
		}
		if cur == nil {
			out = append(out, group{prefix: g.prefix})
			cur = &out[len(out)-1]
		}
		cur.records = append(cur.records, r)
	}
	return out
}

// Write stores the records of batch that no object holds yet, as one OCF
// object per run of consecutive offsets of one region, topic, partition
// and hour. It never replaces an object with one holding other offsets.
func (s *Store) Write(ctx context.Context, batch []sink.Record) error {
	listed := map[string][]span{}
	for _, g := range s.runs(batch) {
		spans, ok := listed[g.prefix]
		if !ok {
			var err error
			if spans, err = s.stored(ctx, g.prefix); err != nil {
				return err
			}
			listed[g.prefix] = spans
		}
		for _, part := range uncovered(g, spans) {
			if err := s.put(ctx, part); err != nil {
				return err
			}
			first, last := part.records[0], part.records[len(part.records)-1]
			listed[g.prefix] = append(listed[g.prefix], span{first.Offset, last.Offset})
		}
	}
	return nil
}

// put encodes and writes one object.
func (s *Store) put(ctx context.Context, g group) error {
	var buf bytes.Buffer
	first, last := g.records[0], g.records[len(g.records)-1]
	key := s.Key(first, last)
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
		return fmt.Errorf("objectstore: %s: %w", key, err)
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
		return fmt.Errorf("objectstore: %s: encoding: %w", key, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel() // on error, an unclosed writer is discarded
	var f *os.File
	bw, err := s.bucket.NewWriter(wctx, key, &blob.WriterOptions{
		ContentType: "application/avro",
		BeforeWrite: func(as func(any) bool) error {
			as(&f) // fileblob: the temporary file, synced before it is renamed
			return nil
		},
	})
	if err != nil {
		return fmt.Errorf("objectstore: %s: %w", key, err)
	}
	if _, err := bw.Write(buf.Bytes()); err != nil {
		cancel()
		_ = bw.Close()
		return fmt.Errorf("objectstore: %s: write: %w", key, err)
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			cancel()
			_ = bw.Close()
			return fmt.Errorf("objectstore: %s: sync: %w", key, err)
		}
	}
	if err := bw.Close(); err != nil {
		return fmt.Errorf("objectstore: %s: %w", key, err)
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
