package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// RowColumns are digests of the columns of a stored row that a sink derives
// from the record's value: what `audit verify` compares between a row as
// stored and the row the sink writes for its raw value. They are digests
// (never the ids or the document themselves), so a Row can be handed
// around and a finding can name the column without its value.
type RowColumns struct {
	// EventID is the SHA-256 of the event_id column.
	EventID Digest
	// UserID is the SHA-256 of the user_id column.
	UserID Digest
	// Event is EventDigest of the event column (the decoded event as a
	// JSON document); zero when the column is not a JSON document.
	Event Digest
}

// StoredColumns returns the RowColumns of a row's event_id, user_id and
// event columns as read from a store.
func StoredColumns(eventID, userID string, event []byte) RowColumns {
	c := RowColumns{EventID: Sum([]byte(eventID)), UserID: Sum([]byte(userID))}
	c.Event, _ = EventDigest(event)
	return c
}

// differs names the columns whose digests differ between c and d, in
// column order.
func (c RowColumns) differs(d RowColumns) []string {
	var out []string
	if c.EventID != d.EventID {
		out = append(out, "event_id")
	}
	if c.UserID != d.UserID {
		out = append(out, "user_id")
	}
	if c.Event != d.Event || c.Event.IsZero() {
		out = append(out, "event")
	}
	return out
}

// RowDecoding says whether a Row's Derived columns were computed.
type RowDecoding uint8

// Row decodings.
const (
	// RowNotDecoded: the RowSource decoded nothing: it has no decoder, or
	// its decoder could not decode the value (DecodeError says why). The
	// event columns are not compared; Checked.RowContents does not count
	// the row, Checked.RowsUndecoded does when there is a why.
	RowNotDecoded RowDecoding = iota
	// RowDecoded: Derived holds the columns of the stored value decoded
	// again.
	RowDecoded
)

// ErrUndecodable is wrapped by an EventDecoder's error when the verifier
// cannot decode the value with its settings: the value does not decode as
// they say (they lack a writer schema the sink had), or the schema
// registry its framing needs is out of reach. It is no I/O failure of the
// store and no finding (the row's value is checked against its sink's
// leaf, and that sink did decode it): the row's event columns are not
// compared, and the report says how many rows were left so and why
// (Checked.RowsUndecoded, RowsUndecodedWhy), rather than the verification
// stopping: it reads only Kafka, the stores and the log.
var ErrUndecodable = errors.New("audit: the verifier cannot decode the stored value")

// EventDecoder decodes a stored record value the way a sink does: the
// event's event_id and user_id, and the event as the JSON document the
// sink stores. sourceTopic is the row's source_topic column (the ingest
// topic the router read the event from), whose framing the value carries.
// An error wrapping ErrUndecodable means the verifier cannot decode the
// value (the row's event columns are then not compared); any other error
// stops the verification.
// The audit package does not decode events itself: `audit verify` passes
// the schemas package's decoder (cmd/residency).
type EventDecoder func(ctx context.Context, sourceTopic string, raw []byte) (eventID, userID string, event []byte, err error)

// SetColumns sets r.Stored from a row's event_id, user_id and event
// columns and, when dec is not nil, r.Derived from its raw column decoded
// again with dec (r.Decoded RowDecoded; or RowNotDecoded with
// r.DecodeError saying why when dec's error wraps ErrUndecodable). Another
// error of dec is returned, wrapped. What the stores' RowSources call for
// every row.
func (r *Row) SetColumns(ctx context.Context, dec EventDecoder, eventID, userID string, event []byte, sourceTopic string, raw []byte) error {
	r.Stored = StoredColumns(eventID, userID, event)
	r.SourceTopic = sourceTopic
	r.Decoded, r.Derived, r.DecodeError = RowNotDecoded, RowColumns{}, ""
	if dec == nil {
		return nil
	}
	id, user, doc, err := dec(ctx, sourceTopic, raw)
	switch {
	case errors.Is(err, ErrUndecodable):
		r.DecodeError = clip(err.Error(), 200)
		return nil
	case err != nil:
		return fmt.Errorf("audit: decode the row at %s/%d@%d: %w", r.Topic, r.Partition, r.Offset, err)
	}
	if r.Derived = StoredColumns(id, user, doc); r.Derived.Event.IsZero() {
		// The decoder's document is not JSON: nothing to compare with.
		r.Derived, r.DecodeError = RowColumns{}, "the decoded event is not a JSON document"
		return nil
	}
	r.Decoded = RowDecoded
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// EventDigest returns the SHA-256 of the canonical form of a JSON
// document, and false when doc is not one JSON value. The canonical form
// is what both a sink's document and a store's copy of it reduce to,
// whatever the store did to its layout: no white space, object members
// sorted by key (a duplicate key: its last value, as PostgreSQL's jsonb
// and encoding/json keep), numbers as exact decimals without leading or
// trailing zeros (1.50, 1.5 and 15e-1 are one number; jsonb rewrites
// exponents and keeps trailing zeros), strings as JSON with U+0000 as
// U+FFFD (jsonb cannot hold U+0000: the PostgreSQL store writes U+FFFD).
// Arrays keep their order.
func EventDigest(doc []byte) (Digest, bool) {
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return Digest{}, false
	}
	if _, err := d.Token(); err != io.EOF {
		return Digest{}, false // trailing data
	}
	b, ok := appendCanonical(nil, v)
	if !ok {
		return Digest{}, false
	}
	return Sum(append([]byte("residency-row-event-v1\x00"), b...)), true
}

func appendCanonical(dst []byte, v any) ([]byte, bool) {
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...), true
	case bool:
		return strconv.AppendBool(dst, x), true
	case json.Number:
		return append(dst, canonicalNumber(string(x))...), true
	case string:
		return appendCanonicalString(dst, x), true
	case []any:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, ok = appendCanonical(dst, e); !ok {
				return dst, false
			}
		}
		return append(dst, ']'), true
	case map[string]any:
		type member struct {
			key string
			v   any
		}
		ms := make([]member, 0, len(x))
		for k, e := range x {
			ms = append(ms, member{strings.ReplaceAll(k, "\x00", "\ufffd"), e})
		}
		slices.SortFunc(ms, func(a, b member) int { return strings.Compare(a.key, b.key) })
		dst = append(dst, '{')
		for i, m := range ms {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendCanonicalString(dst, m.key)
			dst = append(dst, ':')
			var ok bool
			if dst, ok = appendCanonical(dst, m.v); !ok {
				return dst, false
			}
		}
		return append(dst, '}'), true
	}
	return dst, false
}

func appendCanonicalString(dst []byte, s string) []byte {
	b, _ := json.Marshal(strings.ReplaceAll(s, "\x00", "\ufffd")) // a string always marshals
	return append(dst, b...)
}

// canonicalNumber rewrites a JSON number literal as sign, significant
// digits and exponent ("-15e-1" for -1.50), exactly, without arithmetic on
// its value (so an exponent of a billion costs nothing).
func canonicalNumber(s string) string {
	lit := s
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, exp := s, 0
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.Atoi(s[i+1:])
		if err != nil {
			return "?" + lit // an exponent past int: kept as written
		}
		mant, exp = s[:i], e
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := strings.TrimLeft(intPart+frac, "0")
	exp -= len(frac)
	if digits == "" {
		return "0"
	}
	n := len(digits)
	digits = strings.TrimRight(digits, "0")
	exp += n - len(digits)
	if neg {
		digits = "-" + digits
	}
	return digits + "e" + strconv.Itoa(exp)
}
