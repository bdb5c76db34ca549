package schemas

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
	"unsafe"
)

// This file renders an event as a JSON document suited to a jsonb column,
// guided by the writer schema, two ways: straight from the Avro binary body
// (DecodeJSONFast, the sinks' hot path, which never builds goavro's native
// form) and from goavro's native form (RenderJSON). Both are several times
// faster than goavro's textual encoder (DecodeJSON). The document:
//
//   - unions are unwrapped (the value of the branch, or null);
//   - bytes and fixed are base64 strings;
//   - timestamp-millis / -micros and local-timestamp-* are numbers since the
//     epoch in their unit, date is days, time-millis / -micros are numbers in
//     their unit, decimal is a string;
//   - NaN and infinities are the strings "NaN", "Infinity", "-Infinity";
//   - record fields are in schema order; map keys are sorted by RenderJSON
//     and in the order written by DecodeJSONFast (jsonb does not keep key
//     order anyway).

// errRender means a native value does not fit the schema.
var errRender = errors.New("native value does not fit the writer schema")

// maxBlockItems bounds array and map block counts (a corrupt count must not
// make the transcoder loop for long).
const maxBlockItems = 1 << 24

// EventKeys are the event fields every store indexes, read by
// DecodeJSONFast while transcoding the top-level record: the string fields
// event_id and user_id and the timestamp-millis (or -micros) field
// occurred_at, each possibly in a union. A field that is absent, null or of
// another type is left zero.
type EventKeys struct {
	EventID    string
	UserID     string
	OccurredAt time.Time
}

// DecodeJSONFast decodes one event value from topic straight from its Avro
// binary body to a JSON document (see RenderJSON for its shape) and reads
// its EventKeys. Errors are those of Decode: ErrRegistryUnavailable is
// transient, the others (ErrTruncated, ErrCorrupt, ...) mean the event
// cannot be decoded.
func (e *Extractor) DecodeJSONFast(ctx context.Context, topic string, value []byte) (doc []byte, keys EventKeys, err error) {
	w, body, err := e.writerFor(ctx, topic, value, new(WriterRef))
	if err != nil {
		return nil, EventKeys{}, err
	}
	return transcodeEvent(make([]byte, 0, 2*len(body)+256), w.root, body)
}

// renderers caches parsed writer schemas by their text.
var renderers sync.Map // string -> *node

// RenderJSON appends to dst the JSON document of native, goavro's native
// form of a value of writerSchema (as returned by Extractor.Decode). The
// document is the one DecodeJSONFast makes from the binary body, except that
// map keys are sorted.
func RenderJSON(dst []byte, writerSchema string, native any) ([]byte, error) {
	var n *node
	if v, ok := renderers.Load(writerSchema); ok {
		n = v.(*node)
	} else {
		var err error
		if n, err = parseSchema(writerSchema); err != nil {
			return nil, fmt.Errorf("writer schema: %w", err)
		}
		renderers.Store(writerSchema, n)
	}
	return renderJSON(dst, n, native)
}

// branchMatches reports whether name is how goavro names branch n of a
// union in its native form: the full name of a named type, else the type
// name, followed by "." and the logical type when there is one.
func (n *node) branchMatches(name string) bool {
	b := n.kind.String()
	if n.kind == kRecord || n.kind == kEnum || n.kind == kFixed {
		b = n.name
	}
	if name == b {
		return true
	}
	return n.logical != "" && len(name) == len(b)+1+len(n.logical) &&
		name[:len(b)] == b && name[len(b)] == '.' && name[len(b)+1:] == n.logical
}

// renderJSON appends the JSON rendering of native, of schema n, to dst.
func renderJSON(dst []byte, n *node, native any) ([]byte, error) {
	switch n.kind {
	case kNull:
		return append(dst, "null"...), nil
	case kBoolean:
		b, ok := native.(bool)
		if !ok {
			return nil, errRender
		}
		return strconv.AppendBool(dst, b), nil
	case kInt, kLong:
		switch v := native.(type) {
		case int32:
			return strconv.AppendInt(dst, int64(v), 10), nil
		case int64:
			return strconv.AppendInt(dst, v, 10), nil
		case int:
			return strconv.AppendInt(dst, int64(v), 10), nil
		case time.Time:
			var x int64
			switch n.logical {
			case "timestamp-micros", "local-timestamp-micros":
				x = v.UnixMicro()
			case "date":
				x = int64(math.Floor(float64(v.Unix()) / 86400))
			default:
				x = v.UnixMilli()
			}
			return strconv.AppendInt(dst, x, 10), nil
		case time.Duration:
			if n.logical == "time-micros" {
				return strconv.AppendInt(dst, v.Microseconds(), 10), nil
			}
			return strconv.AppendInt(dst, v.Milliseconds(), 10), nil
		}
		return nil, errRender
	case kFloat, kDouble:
		switch v := native.(type) {
		case float32:
			return appendFloat(dst, float64(v), 32), nil
		case float64:
			return appendFloat(dst, v, 64), nil
		}
		return nil, errRender
	case kBytes, kFixed:
		switch v := native.(type) {
		case []byte:
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, v)
			return append(dst, '"'), nil
		case *big.Rat:
			return appendJSONString(dst, v.FloatString(n.scale)), nil
		}
		return nil, errRender
	case kString, kEnum:
		s, ok := native.(string)
		if !ok {
			return nil, errRender
		}
		return appendJSONString(dst, s), nil
	case kArray:
		a, ok := native.([]any)
		if !ok {
			return nil, errRender
		}
		dst = append(dst, '[')
		for i, v := range a {
			if i > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = renderJSON(dst, n.items, v); err != nil {
				return nil, err
			}
		}
		return append(dst, ']'), nil
	case kMap:
		m, ok := native.(map[string]any)
		if !ok {
			return nil, errRender
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(appendJSONString(dst, k), ':')
			var err error
			if dst, err = renderJSON(dst, n.values, m[k]); err != nil {
				return nil, err
			}
		}
		return append(dst, '}'), nil
	case kRecord:
		m, ok := native.(map[string]any)
		if !ok {
			return nil, errRender
		}
		dst = append(dst, '{')
		for i, f := range n.fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, f.jsonKey...)
			var err error
			if dst, err = renderJSON(dst, f.typ, m[f.name]); err != nil {
				return nil, err
			}
		}
		return append(dst, '}'), nil
	case kUnion:
		if native == nil {
			return append(dst, "null"...), nil
		}
		m, ok := native.(map[string]any)
		if !ok || len(m) != 1 {
			return nil, errRender
		}
		for name, v := range m {
			for _, b := range n.types {
				if b.branchMatches(name) {
					return renderJSON(dst, b, v)
				}
			}
		}
		return nil, errRender
	}
	return nil, errRender
}

// transcodeEvent renders body, of top-level schema n, as JSON and reads its
// key fields when n is a record.
func transcodeEvent(dst []byte, n *node, body []byte) ([]byte, EventKeys, error) {
	var kf EventKeys
	if n.kind != kRecord {
		dst, rest, err := transcode(dst, n, body)
		if err == nil && len(rest) > 0 {
			err = fmt.Errorf("%w: %d bytes after the end of the value", ErrTrailingBytes, len(rest))
		}
		return dst, kf, err
	}
	dst = append(dst, '{')
	src := body
	var err error
	for i, f := range n.fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, f.jsonKey...)
		start := src
		if dst, src, err = transcode(dst, f.typ, src); err != nil {
			return nil, kf, err
		}
		switch f.name {
		case "event_id":
			kf.EventID = topString(f.typ, start)
		case "user_id":
			kf.UserID = topString(f.typ, start)
		case "occurred_at":
			kf.OccurredAt = topTime(f.typ, start)
		}
	}
	if len(src) > 0 {
		return nil, kf, trailingError(len(src))
	}
	return append(dst, '}'), kf, nil
}

// topString reads a string (or a union's string branch) that transcode
// already checked.
func topString(n *node, src []byte) string {
	if n.kind == kUnion {
		i, rest, err := readLong(src)
		if err != nil || i < 0 || i >= int64(len(n.types)) {
			return ""
		}
		n, src = n.types[i], rest
	}
	if n.kind != kString {
		return ""
	}
	b, _, err := readBytes(src)
	if err != nil {
		return ""
	}
	return string(b)
}

// topTime reads a timestamp-millis (or -micros) long, possibly in a union.
func topTime(n *node, src []byte) time.Time {
	if n.kind == kUnion {
		i, rest, err := readLong(src)
		if err != nil || i < 0 || i >= int64(len(n.types)) {
			return time.Time{}
		}
		n, src = n.types[i], rest
	}
	if n.kind != kLong {
		return time.Time{}
	}
	v, _, err := readLong(src)
	if err != nil {
		return time.Time{}
	}
	if n.logical == "timestamp-micros" {
		return time.UnixMicro(v).UTC()
	}
	return time.UnixMilli(v).UTC()
}

// readLong reads a long (also a length, a count, a union index) as the
// whole-record check (prog.run) does: a zig-zag varint of at most 10
// bytes, the bits past 64 dropped, as goavro and Apache Avro for Java
// read it. A longer varint is corrupt, a cut one truncated.
func readLong(src []byte) (int64, []byte, error) {
	return readVarint(src, 10)
}

// readInt reads an int as the whole-record check does: a zig-zag varint of at most 5 bytes, the bits past 32 dropped, as
// goavro and Apache Avro for Java read it.
func readInt(src []byte) (int64, []byte, error) {
	v, rest, err := readVarint(src, 5)
	return int64(int32(v)), rest, err
}

// readVarint reads a zig-zag varint of at most max bytes with the whole-
// record check's varint reader.
func readVarint(src []byte, max int) (int64, []byte, error) {
	if v, ok := varint1(src, 0); ok {
		return v, src[1:], nil
	}
	v, end, err := varint(src, 0, max)
	if err != nil {
		return 0, nil, err
	}
	return v, src[end:], nil
}

func readBytes(src []byte) ([]byte, []byte, error) {
	l, src, err := readLong(src)
	if err != nil {
		return nil, nil, err
	}
	if l < 0 {
		return nil, nil, ErrCorrupt
	}
	if int64(len(src)) < l {
		return nil, nil, ErrTruncated
	}
	return src[:l], src[l:], nil
}

// transcode appends the JSON of one value of schema n read from src and
// returns the rest of src.
func transcode(dst []byte, n *node, src []byte) ([]byte, []byte, error) {
	switch n.kind {
	case kNull:
		return append(dst, "null"...), src, nil
	case kBoolean:
		if len(src) < 1 {
			return nil, nil, ErrTruncated
		}
		switch src[0] {
		case 0:
			dst = append(dst, "false"...)
		case 1:
			dst = append(dst, "true"...)
		default:
			return nil, nil, ErrCorrupt
		}
		return dst, src[1:], nil
	case kInt, kLong:
		read := readLong
		if n.kind == kInt {
			read = readInt
		}
		v, rest, err := read(src)
		if err != nil {
			return nil, nil, err
		}
		// Logical types of int and long (dates, times, timestamps) are
		// rendered as their number.
		return strconv.AppendInt(dst, v, 10), rest, nil
	case kFloat:
		if len(src) < 4 {
			return nil, nil, ErrTruncated
		}
		f := math.Float32frombits(binary.LittleEndian.Uint32(src))
		return appendFloat(dst, float64(f), 32), src[4:], nil
	case kDouble:
		if len(src) < 8 {
			return nil, nil, ErrTruncated
		}
		f := math.Float64frombits(binary.LittleEndian.Uint64(src))
		return appendFloat(dst, f, 64), src[8:], nil
	case kBytes:
		b, rest, err := readBytes(src)
		if err != nil {
			return nil, nil, err
		}
		return appendBinary(dst, n, b), rest, nil
	case kFixed:
		if len(src) < n.size {
			return nil, nil, ErrTruncated
		}
		return appendBinary(dst, n, src[:n.size]), src[n.size:], nil
	case kString:
		b, rest, err := readBytes(src)
		if err != nil {
			return nil, nil, err
		}
		return appendJSONString(dst, unsafe.String(unsafe.SliceData(b), len(b))), rest, nil
	case kEnum:
		i, rest, err := readVarint(src, 5) // at most an int's bytes, never cut to 32 bits: out of range, as goavro says
		if err != nil {
			return nil, nil, err
		}
		if i < 0 || i >= int64(len(n.jsonSymbols)) {
			return nil, nil, ErrCorrupt
		}
		return append(dst, n.jsonSymbols[i]...), rest, nil
	case kRecord:
		dst = append(dst, '{')
		var err error
		for i, f := range n.fields {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, f.jsonKey...)
			if dst, src, err = transcode(dst, f.typ, src); err != nil {
				return nil, nil, err
			}
		}
		return append(dst, '}'), src, nil
	case kUnion:
		i, rest, err := readLong(src)
		if err != nil {
			return nil, nil, err
		}
		if i < 0 || i >= int64(len(n.types)) {
			return nil, nil, ErrCorrupt
		}
		return transcode(dst, n.types[i], rest)
	case kArray, kMap:
		open, closing, items := byte('['), byte(']'), n.items
		if n.kind == kMap {
			open, closing, items = '{', '}', n.values
		}
		dst = append(dst, open)
		first := true
		var keys mapKeys // a map's keys so far: a duplicate is refused, as goavro and Extract refuse it
		for {
			count, rest, err := readLong(src)
			if err != nil {
				return nil, nil, err
			}
			src = rest
			if count == 0 {
				break
			}
			if count < 0 {
				if count == math.MinInt64 {
					return nil, nil, ErrCorrupt
				}
				count = -count
				if _, src, err = readLong(src); err != nil { // block size in bytes
					return nil, nil, err
				}
			}
			if count > maxBlockItems || consumesByte(items) && count > int64(len(src)) {
				return nil, nil, ErrCorrupt
			}
			for range count {
				if !first {
					dst = append(dst, ',')
				}
				first = false
				if n.kind == kMap {
					k, rest, err := readBytes(src)
					if err != nil {
						return nil, nil, err
					}
					if keys.seen(k) {
						return nil, nil, errDuplicateKey
					}
					dst = append(appendJSONString(dst, unsafe.String(unsafe.SliceData(k), len(k))), ':')
					src = rest
				}
				if dst, src, err = transcode(dst, items, src); err != nil {
					return nil, nil, err
				}
			}
		}
		return append(dst, closing), src, nil
	}
	return nil, nil, ErrCorrupt
}

func appendFloat(dst []byte, f float64, bits int) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(dst, `"Infinity"`...)
	case math.IsInf(f, -1):
		return append(dst, `"-Infinity"`...)
	}
	return strconv.AppendFloat(dst, f, 'g', -1, bits)
}

// appendBinary renders bytes or fixed: base64, or a decimal's value.
func appendBinary(dst []byte, n *node, b []byte) []byte {
	if n.logical == "decimal" {
		v := new(big.Int).SetBytes(b)
		if len(b) > 0 && b[0]&0x80 != 0 { // two's complement
			v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
		}
		r := new(big.Rat).SetFrac(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.scale)), nil))
		return appendJSONString(dst, r.FloatString(n.scale))
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// consumesByte reports whether every value of n takes at least one byte.
func consumesByte(n *node) bool {
	switch n.kind {
	case kNull, kRecord:
		return false
	case kFixed:
		return n.size > 0
	}
	return true
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigit[c>>4], hexDigit[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const hexDigit = "0123456789abcdef"

// mapKeys remembers the keys of one map, to find a duplicate: the first
// inlineKeys in place, the others in a Go map.
type mapKeys struct {
	n     int
	first [inlineKeys][]byte
	more  map[string]struct{}
}

// seen reports whether k was added before, and adds it.
func (m *mapKeys) seen(k []byte) bool {
	if m.n < inlineKeys {
		for _, p := range m.first[:m.n] {
			if string(p) == string(k) {
				return true
			}
		}
		m.first[m.n] = k
		m.n++
		return false
	}
	if m.more == nil {
		m.more = make(map[string]struct{}, 2*inlineKeys)
		for _, p := range m.first {
			m.more[string(p)] = struct{}{}
		}
	}
	if _, ok := m.more[string(k)]; ok {
		return true
	}
	m.more[string(k)] = struct{}{}
	return false
}
