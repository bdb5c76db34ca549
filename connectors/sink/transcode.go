package sink

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"math"
	"math/big"
	"strconv"
	"time"
	"unsafe"
)

// This file transcodes an Avro binary body straight to the JSON document of
// render.go, guided by the writer schema, without building goavro's native
// form: the sink's hot path.

// errTruncated and errCorrupt report a body that does not fit its schema.
var (
	errTruncated = errors.New("avro body ends early")
	errCorrupt   = errors.New("corrupt avro body")
)

// maxBlockItems bounds array and map block counts (a corrupt count must not
// make the transcoder loop for long).
const maxBlockItems = 1 << 24

// keyFields are the event fields every store indexes, read while
// transcoding the top-level record.
type keyFields struct {
	eventID, userID string
	occurredAt      time.Time
}

// transcodeEvent renders body, of top-level record schema n, as JSON and
// reads its key fields.
func transcodeEvent(dst []byte, n *schemaNode, body []byte) ([]byte, keyFields, error) {
	var kf keyFields
	if n.kind != kRecord {
		dst, rest, err := transcode(dst, n, body)
		if err == nil && len(rest) > 0 {
			err = errCorrupt
		}
		return dst, kf, err
	}
	dst = append(dst, '{')
	src := body
	var err error
	for i := range n.fields {
		f := &n.fields[i]
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, f.key...)
		start := src
		if dst, src, err = transcode(dst, f.node, src); err != nil {
			return nil, kf, err
		}
		switch f.name {
		case "event_id":
			kf.eventID = topString(f.node, start)
		case "user_id":
			kf.userID = topString(f.node, start)
		case "occurred_at":
			kf.occurredAt = topTime(f.node, start)
		}
	}
	if len(src) > 0 {
		return nil, kf, errCorrupt
	}
	return append(dst, '}'), kf, nil
}

// topString reads a string (or a union's string branch) that transcode
// already checked.
func topString(n *schemaNode, src []byte) string {
	if n.kind == kUnion {
		i, m := binary.Varint(src)
		if m <= 0 || i < 0 || int(i) >= len(n.branches) {
			return ""
		}
		n, src = n.branches[i], src[m:]
	}
	if n.kind != kString {
		return ""
	}
	l, m := binary.Varint(src)
	if m <= 0 || l < 0 || int64(len(src)-m) < l {
		return ""
	}
	return string(src[m : m+int(l)])
}

// topTime reads a timestamp-millis (or -micros) long, possibly in a union.
func topTime(n *schemaNode, src []byte) time.Time {
	if n.kind == kUnion {
		i, m := binary.Varint(src)
		if m <= 0 || i < 0 || int(i) >= len(n.branches) {
			return time.Time{}
		}
		n, src = n.branches[i], src[m:]
	}
	if n.kind != kLong {
		return time.Time{}
	}
	v, m := binary.Varint(src)
	if m <= 0 {
		return time.Time{}
	}
	if n.logical == "timestamp-micros" {
		return time.UnixMicro(v).UTC()
	}
	return time.UnixMilli(v).UTC()
}

func readLong(src []byte) (int64, []byte, error) {
	v, m := binary.Varint(src)
	if m == 0 {
		return 0, nil, errTruncated
	}
	if m < 0 {
		return 0, nil, errCorrupt
	}
	return v, src[m:], nil
}

func readBytes(src []byte) ([]byte, []byte, error) {
	l, src, err := readLong(src)
	if err != nil {
		return nil, nil, err
	}
	if l < 0 {
		return nil, nil, errCorrupt
	}
	if int64(len(src)) < l {
		return nil, nil, errTruncated
	}
	return src[:l], src[l:], nil
}

// transcode appends the JSON of one value of schema n read from src and
// returns the rest of src.
func transcode(dst []byte, n *schemaNode, src []byte) ([]byte, []byte, error) {
	switch n.kind {
	case kNull:
		return append(dst, "null"...), src, nil
	case kBoolean:
		if len(src) < 1 {
			return nil, nil, errTruncated
		}
		switch src[0] {
		case 0:
			dst = append(dst, "false"...)
		case 1:
			dst = append(dst, "true"...)
		default:
			return nil, nil, errCorrupt
		}
		return dst, src[1:], nil
	case kInt, kLong:
		v, rest, err := readLong(src)
		if err != nil {
			return nil, nil, err
		}
		if n.kind == kInt && (v < math.MinInt32 || v > math.MaxInt32) {
			return nil, nil, errCorrupt
		}
		// Logical types of int and long (dates, times, timestamps) are
		// rendered as their number.
		return strconv.AppendInt(dst, v, 10), rest, nil
	case kFloat:
		if len(src) < 4 {
			return nil, nil, errTruncated
		}
		f := math.Float32frombits(binary.LittleEndian.Uint32(src))
		return appendFloat(dst, float64(f), 32), src[4:], nil
	case kDouble:
		if len(src) < 8 {
			return nil, nil, errTruncated
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
			return nil, nil, errTruncated
		}
		return appendBinary(dst, n, src[:n.size]), src[n.size:], nil
	case kString:
		b, rest, err := readBytes(src)
		if err != nil {
			return nil, nil, err
		}
		return appendString(dst, unsafe.String(unsafe.SliceData(b), len(b))), rest, nil
	case kEnum:
		i, rest, err := readLong(src)
		if err != nil {
			return nil, nil, err
		}
		if i < 0 || i >= int64(len(n.symbols)) {
			return nil, nil, errCorrupt
		}
		return append(dst, n.symbols[i]...), rest, nil
	case kRecord:
		dst = append(dst, '{')
		var err error
		for i := range n.fields {
			f := &n.fields[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, f.key...)
			if dst, src, err = transcode(dst, f.node, src); err != nil {
				return nil, nil, err
			}
		}
		return append(dst, '}'), src, nil
	case kUnion:
		i, rest, err := readLong(src)
		if err != nil {
			return nil, nil, err
		}
		if i < 0 || i >= int64(len(n.branches)) {
			return nil, nil, errCorrupt
		}
		return transcode(dst, n.branches[i], rest)
	case kArray, kMap:
		open, closing := byte('['), byte(']')
		if n.kind == kMap {
			open, closing = '{', '}'
		}
		dst = append(dst, open)
		first := true
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
					return nil, nil, errCorrupt
				}
				count = -count
				if _, src, err = readLong(src); err != nil { // block size in bytes
					return nil, nil, err
				}
			}
			if count > maxBlockItems || consumesByte(n.items) && count > int64(len(src)) {
				return nil, nil, errCorrupt
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
					dst = append(appendString(dst, unsafe.String(unsafe.SliceData(k), len(k))), ':')
					src = rest
				}
				if dst, src, err = transcode(dst, n.items, src); err != nil {
					return nil, nil, err
				}
			}
		}
		return append(dst, closing), src, nil
	}
	return nil, nil, errCorrupt
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
func appendBinary(dst []byte, n *schemaNode, b []byte) []byte {
	if n.logical == "decimal" {
		v := new(big.Int).SetBytes(b)
		if len(b) > 0 && b[0]&0x80 != 0 { // two's complement
			v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
		}
		r := new(big.Rat).SetFrac(v, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n.scale)), nil))
		return appendString(dst, r.FloatString(n.scale))
	}
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// consumesByte reports whether every value of n takes at least one byte.
func consumesByte(n *schemaNode) bool {
	switch n.kind {
	case kNull, kRecord:
		return false
	case kFixed:
		return n.size > 0
	}
	return true
}
