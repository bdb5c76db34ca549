package schemas

import (
	"strconv"
	"strings"
)

// Fingerprint returns the CRC-64-AVRO (Rabin) fingerprint of the Parsing
// Canonical Form of schemaJSON, as used by single-object encoding. It follows
// the Avro specification (as Apache Avro for Java and fastavro do); note that
// goavro's own SchemaCRC64Avro differs for schemas with logical types on
// primitives, because goavro keeps {"type":"long"} where the specification
// reduces it to "long".
func Fingerprint(schemaJSON string) (uint64, error) {
	n, err := parseSchema(schemaJSON)
	if err != nil {
		return 0, err
	}
	return rabin(canonicalForm(n)), nil
}

// FullName returns the full name of a schema's top-level type (e.g.
// "io.residency.events.UserEvent"), or "" when it is not a named type (a
// record, enum or fixed). A schema that is not valid Avro fails with
// ErrBadSchema.
func FullName(schemaJSON string) (string, error) {
	n, err := parseSchema(schemaJSON)
	if err != nil {
		return "", err
	}
	return n.name, nil
}

// canonicalForm renders n in Parsing Canonical Form.
func canonicalForm(n *node) []byte {
	var b strings.Builder
	writeCanonical(&b, n, map[string]bool{})
	return []byte(b.String())
}

func writeCanonical(b *strings.Builder, n *node, seen map[string]bool) {
	switch n.kind {
	case kRecord, kEnum, kFixed:
		if seen[n.name] {
			b.WriteString(strconv.Quote(n.name))
			return
		}
		seen[n.name] = true
		b.WriteString(`{"name":` + strconv.Quote(n.name) + `,"type":"` + n.kind.String() + `"`)
		switch n.kind {
		case kRecord:
			b.WriteString(`,"fields":[`)
			for i, f := range n.fields {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(`{"name":` + strconv.Quote(f.name) + `,"type":`)
				writeCanonical(b, f.typ, seen)
				b.WriteByte('}')
			}
			b.WriteByte(']')
		case kEnum:
			b.WriteString(`,"symbols":[`)
			for i, s := range n.symbols {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(strconv.Quote(s))
			}
			b.WriteByte(']')
		case kFixed:
			b.WriteString(`,"size":` + strconv.Itoa(n.size))
		}
		b.WriteByte('}')
	case kArray:
		b.WriteString(`{"type":"array","items":`)
		writeCanonical(b, n.items, seen)
		b.WriteByte('}')
	case kMap:
		b.WriteString(`{"type":"map","values":`)
		writeCanonical(b, n.values, seen)
		b.WriteByte('}')
	case kUnion:
		b.WriteByte('[')
		for i, t := range n.types {
			if i > 0 {
				b.WriteByte(',')
			}
			writeCanonical(b, t, seen)
		}
		b.WriteByte(']')
	default:
		b.WriteString(`"` + n.kind.String() + `"`)
	}
}

// rabinEmpty is the CRC-64-AVRO fingerprint of nothing.
const rabinEmpty = 0xc15d213aa4d7a795

var rabinTable = func() (t [256]uint64) {
	for i := range t {
		fp := uint64(i)
		for range 8 {
			fp = (fp >> 1) ^ (rabinEmpty & -(fp & 1))
		}
		t[i] = fp
	}
	return t
}()

// rabin is the CRC-64-AVRO fingerprint of buf.
func rabin(buf []byte) uint64 {
	fp := uint64(rabinEmpty)
	for _, c := range buf {
		fp = (fp >> 8) ^ rabinTable[byte(fp)^c]
	}
	return fp
}
