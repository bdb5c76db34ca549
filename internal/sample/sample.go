// Package sample builds sample user events of the canonical schema
// (schemas.UserEventSchema): routable, unplaceable and malformed ones. It is
// the one sample-event builder of residency: `residency demo`, `residency
// bench` (internal/bench) and the tests all encode their events with it.
// It imports no testing code, so the binary may link it.
package sample

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/schemas"
)

// Encoder encodes sample events with the canonical schema, in Avro
// single-object encoding (which needs no schema registry) or as bare Avro.
// It is safe for concurrent use.
type Encoder struct {
	codec *goavro.Codec
	fp    uint64
}

// NewEncoder compiles the canonical schema.
func NewEncoder() (*Encoder, error) {
	c, err := goavro.NewCodec(schemas.UserEventSchema)
	if err != nil {
		return nil, fmt.Errorf("sample: user event schema: %w", err)
	}
	fp, err := schemas.Fingerprint(schemas.UserEventSchema)
	if err != nil {
		return nil, fmt.Errorf("sample: fingerprint: %w", err)
	}
	return &Encoder{codec: c, fp: fp}, nil
}

// Event is the part of a user event the router cares about; the rest is
// filled with plausible values.
type Event struct {
	// ID is the event_id.
	ID string
	// UserID is the user_id.
	UserID string
	// Country is the country code; "" encodes null (no country).
	Country string
	// Type is the event_type symbol. Default "VIDEO_VIEW".
	Type string
	// OccurredAt is the occurred_at. Default 2026-09-21T16:53:20Z.
	OccurredAt time.Time
	// Full sets every optional field of the schema (device details,
	// network, locale, geo position, creator, ...), as a real client's
	// event does; otherwise only a few are set. Default false.
	Full bool
}

// defaultOccurredAt is Event.OccurredAt's default.
var defaultOccurredAt = time.UnixMilli(1_790_000_000_000).UTC()

// Encode returns e encoded in single-object framing.
func (enc *Encoder) Encode(e Event) ([]byte, error) {
	body, err := enc.Body(e)
	if err != nil {
		return nil, err
	}
	return schemas.AppendSingleObject(nil, enc.fp, body), nil
}

// Fingerprint is the single-object fingerprint of the canonical schema.
func (enc *Encoder) Fingerprint() uint64 { return enc.fp }

// Body returns e as bare Avro binary (no framing).
func (enc *Encoder) Body(e Event) ([]byte, error) {
	return enc.codec.BinaryFromNative(nil, enc.native(e))
}

// BodyFromJSON encodes an event given in Avro JSON (unions tagged with their
// branch, e.g. {"country": {"string": "DE"}}) as bare Avro binary.
func (enc *Encoder) BodyFromJSON(doc []byte) ([]byte, error) {
	native, _, err := enc.codec.NativeFromTextual(doc)
	if err != nil {
		return nil, fmt.Errorf("sample: event JSON does not match the user event schema: %w", err)
	}
	return enc.codec.BinaryFromNative(nil, native)
}

func (enc *Encoder) native(e Event) map[string]any {
	typ := e.Type
	if typ == "" {
		typ = "VIDEO_VIEW"
	}
	at := e.OccurredAt
	if at.IsZero() {
		at = defaultOccurredAt
	}
	var country any
	if e.Country != "" {
		country = goavro.Union("string", e.Country)
	}
	ev := map[string]any{
		"event_id":    e.ID,
		"user_id":     e.UserID,
		"occurred_at": at,
		"event_type":  typ,
		"session_id":  goavro.Union("string", "s-"+e.UserID),
		"device": map[string]any{
			"device_id":   "d-" + e.UserID,
			"os":          "ANDROID",
			"app_version": "34.1.0",
		},
		"video_id":      goavro.Union("string", "v-123"),
		"watch_time_ms": goavro.Union("long", int64(4200)),
		"country":       country,
		"tags":          []any{"demo"},
		"properties":    map[string]any{"source": "sample"},
	}
	if e.Full {
		ev["device"] = map[string]any{
			"device_id":     "d-8c1f",
			"os":            "ANDROID",
			"os_version":    goavro.Union("string", "14"),
			"model":         goavro.Union("string", "Pixel 8"),
			"app_version":   "34.1.2",
			"screen_width":  goavro.Union("int", int32(1080)),
			"screen_height": goavro.Union("int", int32(2400)),
		}
		ev["network"] = "WIFI"
		ev["locale"] = goavro.Union("string", "en-US")
		ev["timezone"] = goavro.Union("string", "America/Chicago")
		ev["video_id"] = goavro.Union("string", "v-7301")
		ev["creator_id"] = goavro.Union("string", "c-42")
		ev["watch_time_ms"] = goavro.Union("long", int64(15_300))
		ev["video_duration_ms"] = goavro.Union("long", int64(31_000))
		ev["position_ms"] = nil
		ev["muted"] = false
		ev["geo_lat"] = goavro.Union("double", 41.88)
		ev["geo_lon"] = goavro.Union("double", -87.63)
		ev["tags"] = []any{"fyp", "cooking"}
		ev["properties"] = map[string]any{"source": "for_you", "ab_bucket": "b7"}
		ev["client_ip_hash"] = goavro.Union("io.residency.events.Sha256", make([]byte, 32))
		ev["schema_version"] = int32(3)
	}
	return ev
}

// Malformation is a way an event's value can be broken, so that the
// router dead-letters it with the reason of the same name.
type Malformation string

// The malformations, named as the dead-letter reasons they cause.
const (
	// BadMagic is the event as JSON text, not Avro (bad_magic).
	BadMagic Malformation = "bad_magic"
	// Truncated is the encoded event cut in half (truncated).
	Truncated Malformation = "truncated"
	// EmptyValue is no value at all (empty_value).
	EmptyValue Malformation = "empty_value"
	// UnknownSchema is the encoded event with a fingerprint no known schema
	// has (unknown_schema).
	UnknownSchema Malformation = "unknown_schema"
)

// Malformed returns e encoded in single-object framing, then broken as m
// says.
func (enc *Encoder) Malformed(e Event, m Malformation) ([]byte, error) {
	switch m {
	case BadMagic:
		return json.Marshal(map[string]string{"event_id": e.ID, "user_id": e.UserID, "country": e.Country})
	case EmptyValue:
		return nil, nil
	}
	v, err := enc.Encode(e)
	if err != nil {
		return nil, err
	}
	switch m {
	case Truncated:
		return v[:len(v)/2], nil
	case UnknownSchema:
		v = slices.Clone(v)
		v[2] ^= 0xff // a byte of the fingerprint
		return v, nil
	}
	return nil, fmt.Errorf("sample: unknown malformation %q", m)
}
