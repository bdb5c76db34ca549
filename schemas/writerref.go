package schemas

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// WriterRef says exactly how an event value was read: its framing and its
// writer schema. The router records it in the residency-schema header of
// every event it writes, and sinks read the event the same way
// (DecodeRef, ExtractRef), whatever the framing configured for the topic
// they consume, so one pinned topic may hold every framing.
//
// The zero WriterRef means "not known" (the value could not be unframed).
type WriterRef struct {
	// Framing is the framing the value was read with.
	Framing Framing
	// Fingerprint is the writer schema's CRC-64-AVRO (Rabin) fingerprint of
	// its Parsing Canonical Form, as the Avro specification defines it
	// (Fingerprint), for the single-object and raw framings; 0 for
	// confluent.
	Fingerprint uint64
	// ID is the schema registry id, for the confluent framing; 0 otherwise.
	ID uint32
}

// ErrBadWriterRef: a residency-schema header value that is not a WriterRef.
var ErrBadWriterRef = errors.New("bad writer schema reference")

// IsZero reports whether r is the zero WriterRef ("not known").
func (r WriterRef) IsZero() bool { return r == WriterRef{} }

// String returns r in its header form: "confluent:ID" with the registry
// id in decimal, or "single-object:FP" / "raw:FP" with the fingerprint as
// 16 lower-case hex digits, most significant first (the number, as
// `residency schemas fingerprint` prints it; note that the single-object
// framing carries the same 8 bytes little-endian, i.e. in the reverse
// order). The zero WriterRef is "".
func (r WriterRef) String() string {
	b, _ := r.AppendText(nil)
	return string(b)
}

// AppendText appends the header form of r (see String) to dst. It never
// fails and does not allocate when dst has room.
func (r WriterRef) AppendText(dst []byte) ([]byte, error) {
	switch r.Framing {
	case "":
		return dst, nil
	case FramingConfluent:
		dst = append(dst, FramingConfluent...)
		dst = append(dst, ':')
		return strconv.AppendUint(dst, uint64(r.ID), 10), nil
	default:
		dst = append(dst, r.Framing...)
		dst = append(dst, ':')
		return appendHex16(dst, r.Fingerprint), nil
	}
}

// MarshalText returns the header form of r (see String).
func (r WriterRef) MarshalText() ([]byte, error) { return r.AppendText(nil) }

// UnmarshalText parses the header form of a WriterRef (see String).
func (r *WriterRef) UnmarshalText(b []byte) error {
	v, err := ParseWriterRef(string(b))
	if err != nil {
		return err
	}
	*r = v
	return nil
}

// ParseWriterRef parses the header form of a WriterRef (see String). Errors
// wrap ErrBadWriterRef.
func ParseWriterRef(s string) (WriterRef, error) {
	framing, key, ok := strings.Cut(s, ":")
	if !ok || key == "" {
		return WriterRef{}, fmt.Errorf("%w: %q is not FRAMING:KEY", ErrBadWriterRef, s)
	}
	switch f := Framing(framing); f {
	case FramingConfluent:
		id, err := strconv.ParseUint(key, 10, 32)
		if err != nil {
			return WriterRef{}, fmt.Errorf("%w: %q: registry id is not a 32-bit decimal number", ErrBadWriterRef, s)
		}
		return WriterRef{Framing: f, ID: uint32(id)}, nil
	case FramingSingleObject, FramingRaw:
		if len(key) != 16 {
			return WriterRef{}, fmt.Errorf("%w: %q: fingerprint is not 16 hex digits", ErrBadWriterRef, s)
		}
		fp, err := strconv.ParseUint(key, 16, 64)
		if err != nil {
			return WriterRef{}, fmt.Errorf("%w: %q: fingerprint is not 16 hex digits", ErrBadWriterRef, s)
		}
		return WriterRef{Framing: f, Fingerprint: fp}, nil
	default:
		return WriterRef{}, fmt.Errorf("%w: %q: framing is not one of confluent, single-object, raw", ErrBadWriterRef, s)
	}
}

// appendHex16 appends v as 16 lower-case hex digits.
func appendHex16(dst []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, digits[(v>>uint(shift))&0xf])
	}
	return dst
}

// writerForRef checks value, removes the framing ref names and finds the
// writer schema ref names. The value's own framing bytes must agree with
// ref: a single-object value must carry ref's fingerprint (or goavro's
// fingerprint of the same schema), a confluent value ref's registry id.
func (e *Extractor) writerForRef(ctx context.Context, ref WriterRef, value []byte) (*writer, []byte, error) {
	if len(value) == 0 {
		return nil, nil, ErrEmptyValue
	}
	if len(value) > e.maxSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(value), e.maxSize)
	}
	if !ref.Framing.valid() {
		return nil, nil, fmt.Errorf("%w: framing %q is not one of confluent, single-object, raw", ErrUnknownSchema, ref.Framing)
	}
	u, err := unframe(ref.Framing, value)
	if err != nil {
		return nil, nil, err
	}
	switch ref.Framing {
	case FramingConfluent:
		if u.id != ref.ID {
			return nil, nil, fmt.Errorf("%w: the value carries registry id %d, not %d", ErrBadMagic, u.id, ref.ID)
		}
		w, err := e.byRegistryID(ctx, u.id)
		return w, u.body, err
	default:
		w, ok := e.byFP[ref.Fingerprint]
		if !ok {
			return nil, nil, fmt.Errorf("%w: fingerprint %016x is neither embedded nor in the catalogue nor a raw schema", ErrUnknownSchema, ref.Fingerprint)
		}
		if ref.Framing == FramingSingleObject {
			if got, ok := e.byFP[u.fingerprint]; !ok || got != w {
				return nil, nil, fmt.Errorf("%w: the value carries fingerprint %016x, not %016x", ErrBadMagic, u.fingerprint, ref.Fingerprint)
			}
		}
		return w, u.body, nil
	}
}

// ExtractRef is Extract, reading value the way ref says (see WriterRef)
// instead of the way its topic is configured.
func (e *Extractor) ExtractRef(ctx context.Context, ref WriterRef, value []byte) (Fields, error) {
	w, body, err := e.writerForRef(ctx, ref, value)
	if err != nil {
		return Fields{}, err
	}
	f := Fields{Writer: ref}
	if err := w.extract(body, &f); err != nil {
		return Fields{Writer: ref}, err
	}
	return f, nil
}

// DecodeRef is Decode, reading value the way ref says (see WriterRef)
// instead of the way its topic is configured.
func (e *Extractor) DecodeRef(ctx context.Context, ref WriterRef, value []byte) (native any, writerSchema string, err error) {
	w, body, err := e.writerForRef(ctx, ref, value)
	if err != nil {
		return nil, "", err
	}
	return w.decode(body)
}

// DecodeJSONFastRef is DecodeJSONFast, reading value the way ref says (see
// WriterRef) instead of the way its topic is configured.
func (e *Extractor) DecodeJSONFastRef(ctx context.Context, ref WriterRef, value []byte) (doc []byte, keys EventKeys, err error) {
	w, body, err := e.writerForRef(ctx, ref, value)
	if err != nil {
		return nil, EventKeys{}, err
	}
	return transcodeEvent(make([]byte, 0, 2*len(body)+256), w.root, body)
}
