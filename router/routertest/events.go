package routertest

import (
	"fmt"
	"time"

	"github.com/linkedin/goavro/v2"

	"github.com/residency-router/residency/schemas"
)

// Encoder builds sample user events of the canonical schema
// (schemas.UserEventSchema) in Avro single-object encoding, which needs no
// schema registry. Tests and `residency demo` use it.
type Encoder struct {
	codec *goavro.Codec
	fp    uint64
}

// NewEncoder compiles the canonical schema.
func NewEncoder() (*Encoder, error) {
	c, err := goavro.NewCodec(schemas.UserEventSchema)
	if err != nil {
		return nil, fmt.Errorf("routertest: user event schema: %w", err)
	}
	fp, err := schemas.Fingerprint(schemas.UserEventSchema)
	if err != nil {
		return nil, fmt.Errorf("routertest: fingerprint: %w", err)
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
	// Country is the country code; "" encodes null.
	Country string
	// Type is the event_type symbol. Default "VIDEO_VIEW".
	Type string
}

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
		return nil, fmt.Errorf("routertest: event JSON does not match the user event schema: %w", err)
	}
	return enc.codec.BinaryFromNative(nil, native)
}

func (enc *Encoder) native(e Event) map[string]any {
	typ := e.Type
	if typ == "" {
		typ = "VIDEO_VIEW"
	}
	var country any
	if e.Country != "" {
		country = goavro.Union("string", e.Country)
	}
	return map[string]any{
		"event_id":    e.ID,
		"user_id":     e.UserID,
		"occurred_at": time.UnixMilli(1_790_000_000_000).UTC(),
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
		"properties":    map[string]any{"source": "routertest"},
	}
}
