package schemas

import (
	"encoding/binary"
	"fmt"
)

// Framing is how an Avro record is wrapped in a Kafka message value.
type Framing string

const (
	// FramingConfluent is the Confluent wire format: magic byte 0, a 4-byte
	// big-endian schema id, then the Avro binary body. The writer schema is
	// fetched from a Confluent-compatible schema registry by id.
	FramingConfluent Framing = "confluent"
	// FramingSingleObject is Avro single-object encoding: C3 01, the 8-byte
	// little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing
	// Canonical Form, then the body. The writer schema comes from the local
	// catalogue directory or the embedded set.
	FramingSingleObject Framing = "single-object"
	// FramingRaw is bare Avro binary; the writer schema is configured per
	// topic.
	FramingRaw Framing = "raw"
)

// Sizes of the framing headers.
const (
	confluentHeaderLen    = 5
	singleObjectHeaderLen = 10
)

// valid reports whether f is one of the known framings.
func (f Framing) valid() bool {
	return f == FramingConfluent || f == FramingSingleObject || f == FramingRaw
}

// AppendConfluent appends body framed in the Confluent wire format with the
// given registry schema id to dst and returns the extended slice.
func AppendConfluent(dst []byte, schemaID uint32, body []byte) []byte {
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint32(dst, schemaID)
	return append(dst, body...)
}

// AppendSingleObject appends body framed in Avro single-object encoding with
// the given writer schema fingerprint (see Fingerprint) to dst and returns the
// extended slice.
func AppendSingleObject(dst []byte, fingerprint uint64, body []byte) []byte {
	dst = append(dst, 0xC3, 0x01)
	dst = binary.LittleEndian.AppendUint64(dst, fingerprint)
	return append(dst, body...)
}

// unframed is a value split into its schema key and Avro body.
type unframed struct {
	id          uint32 // confluent
	fingerprint uint64 // single-object
	body        []byte
}

// unframe splits value according to framing f. It never allocates on
// success.
func unframe(f Framing, value []byte) (unframed, error) {
	switch f {
	case FramingConfluent:
		if value[0] != 0 {
			return unframed{}, fmt.Errorf("%w: confluent framing wants 0x00, got 0x%02x", ErrBadMagic, value[0])
		}
		if len(value) < confluentHeaderLen {
			return unframed{}, fmt.Errorf("%w: %d bytes is shorter than the 5-byte confluent header", ErrTruncated, len(value))
		}
		return unframed{id: binary.BigEndian.Uint32(value[1:5]), body: value[confluentHeaderLen:]}, nil
	case FramingSingleObject:
		if value[0] != 0xC3 || (len(value) > 1 && value[1] != 0x01) {
			return unframed{}, fmt.Errorf("%w: single-object framing wants C3 01", ErrBadMagic)
		}
		if len(value) < singleObjectHeaderLen {
			return unframed{}, fmt.Errorf("%w: %d bytes is shorter than the 10-byte single-object header", ErrTruncated, len(value))
		}
		return unframed{fingerprint: binary.LittleEndian.Uint64(value[2:10]), body: value[singleObjectHeaderLen:]}, nil
	default:
		return unframed{body: value}, nil
	}
}
