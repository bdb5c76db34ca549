package schemas

import (
	"errors"
	"fmt"
)

// Fields are the jurisdiction inputs of one event, read straight from its
// encoded bytes. The slices alias the event's value: they are valid only while
// the value is, and must be copied to be kept.
type Fields struct {
	// Country is the event's country code as written by the producer (normally
	// ISO 3166-1 alpha-2). Nil when HasCountry is false.
	Country []byte
	// HasCountry is false when the country field is absent from the writer
	// schema or null in the event.
	HasCountry bool
	// UserID is the event's user id, used to look up pins. Nil when absent.
	UserID []byte
	// Writer says how the value was read: framing and writer schema (see
	// WriterRef). The router records it in the residency-schema header.
	// On error, set as far as the value was read (see Extractor.Extract).
	Writer WriterRef
}

// Sentinel errors for events that cannot be decoded. Callers branch on them
// with errors.Is; the router sends such events to the dead-letter topic with
// the matching reason (see Reason).
var (
	// ErrEmptyValue: the value is nil or empty (a tombstone or a broken producer).
	ErrEmptyValue = errors.New("empty value")
	// ErrTooLarge: the value exceeds the configured maximum size.
	ErrTooLarge = errors.New("value too large")
	// ErrBadMagic: the value does not start with the framing's magic bytes.
	ErrBadMagic = errors.New("bad magic byte")
	// ErrUnknownSchema: the schema id or fingerprint is not known to the
	// registry or catalogue.
	ErrUnknownSchema = errors.New("unknown schema")
	// ErrTruncated: the value ends before the record does (also when a
	// length or an array or map count claims more than the value holds).
	ErrTruncated = errors.New("truncated avro")
	// ErrCorrupt: the bytes are not a valid encoding of the writer schema
	// (bad varint, negative length, union index out of range, bad UTF-8 ...).
	ErrCorrupt = errors.New("corrupt avro")
	// ErrTrailingBytes: the value holds bytes after the end of the record.
	// It wraps ErrCorrupt (such a value is not a valid encoding either), so
	// callers that branch on ErrCorrupt see it too; Reason tells it apart.
	ErrTrailingBytes = fmt.Errorf("%w: bytes after the end of the record", ErrCorrupt)
	// ErrRegistryUnavailable: the schema registry could not be reached. This is
	// transient: the event is not dead-lettered, the caller retries.
	ErrRegistryUnavailable = errors.New("schema registry unavailable")
)

// Reason maps a decode error to the short, bounded-cardinality reason used in
// dead-letter headers and metric labels: one of Reasons. Errors that match
// no sentinel map to "corrupt".
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrEmptyValue):
		return "empty_value"
	case errors.Is(err, ErrTooLarge):
		return "too_large"
	case errors.Is(err, ErrBadMagic):
		return "bad_magic"
	case errors.Is(err, ErrUnknownSchema):
		return "unknown_schema"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrTrailingBytes):
		return "trailing_bytes"
	default:
		return "corrupt"
	}
}

// Reasons lists every reason Reason returns, in the order of the
// dead-letter reasons table of docs/ingest-contract.md.
func Reasons() []string {
	return []string{"empty_value", "too_large", "bad_magic", "unknown_schema", "truncated", "trailing_bytes", "corrupt"}
}
