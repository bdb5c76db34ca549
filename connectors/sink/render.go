package sink

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// This file renders goavro's native form of a decoded event as a JSON
// document, guided by the writer schema. It is several times faster than
// goavro's textual encoder, and its document suits a jsonb column:
//
//   - unions are unwrapped (the value of the branch, or null);
//   - bytes and fixed are base64 strings (the raw column has the exact bytes);
//   - timestamp-millis / -micros and local-timestamp-* are numbers since the
//     epoch in their unit, date is days, time-millis / -micros are numbers in
//     their unit, decimal is a string;
//   - NaN and infinities are the strings "NaN", "Infinity", "-Infinity";
//   - record fields are in schema order; map keys are sorted here and in
//     the order written by the transcoder (transcode.go), which is the hot
//     path (jsonb does not keep key order anyway).

// errRender means the native value does not fit the schema.
var errRender = errors.New("native value does not fit the writer schema")

// kind is an Avro type.
type kind int

const (
	kNull kind = iota
	kBoolean
	kInt
	kLong
	kFloat
	kDouble
	kBytes
	kString
	kRecord
	kEnum
	kArray
	kMap
	kFixed
	kUnion
)

// schemaNode is one type of a parsed writer schema.
type schemaNode struct {
	kind     kind
	logical  string
	scale    int
	name     string        // full name of named types
	fields   []schemaField // record
	items    *schemaNode   // array items, map values
	branches []*schemaNode // union
	symbols  [][]byte      // enum symbols, as JSON strings
	size     int           // fixed
}

type schemaField struct {
	name string
	key  []byte // `"name":`, JSON-escaped
	node *schemaNode
}

// matches reports whether name is how goavro names branch n of a union in
// its native form: the full name of a named type, else the type name,
// followed by "." and the logical type when there is one.
func (n *schemaNode) matches(name string) bool {
	b := n.branchName()
	if name == b {
		return true
	}
	return n.logical != "" && len(name) == len(b)+1+len(n.logical) &&
		name[:len(b)] == b && name[len(b)] == '.' && name[len(b)+1:] == n.logical
}

// branchName is the type name of a union branch.
func (n *schemaNode) branchName() string {
	switch n.kind {
	case kRecord, kEnum, kFixed:
		return n.name
	case kNull:
		return "null"
	case kBoolean:
		return "boolean"
	case kInt:
		return "int"
	case kLong:
		return "long"
	case kFloat:
		return "float"
	case kDouble:
		return "double"
	case kBytes:
		return "bytes"
	case kString:
		return "string"
	case kArray:
		return "array"
	case kMap:
		return "map"
	}
	return ""
}

// renderers caches parsed writer schemas by their text.
var renderers sync.Map // string -> *schemaNode

// schemaFor returns the parsed writer schema.
func schemaFor(text string) (*schemaNode, error) {
	if n, ok := renderers.Load(text); ok {
		return n.(*schemaNode), nil
	}
	var v any
	if err := json.Unmarshal([]byte(text), &v); err != nil {
		return nil, fmt.Errorf("writer schema: %w", err)
	}
	p := schemaParser{names: map[string]*schemaNode{}}
	n, err := p.parse(v, "")
	if err != nil {
		return nil, fmt.Errorf("writer schema: %w", err)
	}
	renderers.Store(text, n)
	return n, nil
}

type schemaParser struct {
	names map[string]*schemaNode
}

var primitives = map[string]kind{
	"null": kNull, "boolean": kBoolean, "int": kInt, "long": kLong, "float": kFloat,
	"double": kDouble, "bytes": kBytes, "string": kString,
}

func fullName(name, namespace string) string {
	if strings.Contains(name, ".") || namespace == "" {
		return name
	}
	return namespace + "." + name
}

func (p *schemaParser) parse(v any, ns string) (*schemaNode, error) {
	switch t := v.(type) {
	case string:
		if k, ok := primitives[t]; ok {
			return &schemaNode{kind: k}, nil
		}
		if n, ok := p.names[fullName(t, ns)]; ok {
			return n, nil
		}
		if n, ok := p.names[t]; ok {
			return n, nil
		}
		return nil, fmt.Errorf("unknown type %q", t)
	case []any:
		u := &schemaNode{kind: kUnion}
		for _, b := range t {
			n, err := p.parse(b, ns)
			if err != nil {
				return nil, err
			}
			u.branches = append(u.branches, n)
		}
		return u, nil
	case map[string]any:
		typ, _ := t["type"].(string)
		logical, _ := t["logicalType"].(string)
		if k, ok := primitives[typ]; ok {
			n := &schemaNode{kind: k, logical: logical}
			if s, ok := t["scale"].(float64); ok {
				n.scale = int(s)
			}
			return n, nil
		}
		if typ == "" {
			if inner, ok := t["type"]; ok {
				return p.parse(inner, ns) // {"type": {...}} or {"type": [...]}
			}
			return nil, errors.New("type without a type")
		}
		switch typ {
		case "record", "error", "enum", "fixed":
			name, _ := t["name"].(string)
			if nsv, ok := t["namespace"].(string); ok && !strings.Contains(name, ".") {
				ns = nsv
			}
			fn := fullName(name, ns)
			if i := strings.LastIndexByte(fn, '.'); i >= 0 {
				ns = fn[:i]
			}
			n := &schemaNode{name: fn, logical: logical}
			p.names[fn] = n
			switch typ {
			case "enum":
				n.kind = kEnum
				syms, _ := t["symbols"].([]any)
				for _, sym := range syms {
					str, _ := sym.(string)
					n.symbols = append(n.symbols, appendString(nil, str))
				}
			case "fixed":
				n.kind = kFixed
				if s, ok := t["scale"].(float64); ok {
					n.scale = int(s)
				}
				size, _ := t["size"].(float64)
				n.size = int(size)
			default:
				n.kind = kRecord
				fs, _ := t["fields"].([]any)
				for _, f := range fs {
					fm, _ := f.(map[string]any)
					fname, _ := fm["name"].(string)
					fn, err := p.parse(fm["type"], ns)
					if err != nil {
						return nil, fmt.Errorf("field %s: %w", fname, err)
					}
					key, _ := json.Marshal(fname)
					n.fields = append(n.fields, schemaField{name: fname, key: append(key, ':'), node: fn})
				}
			}
			return n, nil
		case "array":
			items, err := p.parse(t["items"], ns)
			if err != nil {
				return nil, err
			}
			return &schemaNode{kind: kArray, items: items}, nil
		case "map":
			values, err := p.parse(t["values"], ns)
			if err != nil {
				return nil, err
			}
			return &schemaNode{kind: kMap, items: values}, nil
		}
		return p.parse(typ, ns)
	}
	return nil, fmt.Errorf("unexpected schema element %T", v)
}

// renderJSON appends the JSON rendering of native, of schema n, to dst.
func renderJSON(dst []byte, n *schemaNode, native any) ([]byte, error) {
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
		var f float64
		bits := 64
		switch v := native.(type) {
		case float32:
			f, bits = float64(v), 32
		case float64:
			f = v
		default:
			return nil, errRender
		}
		switch {
		case math.IsNaN(f):
			return append(dst, `"NaN"`...), nil
		case math.IsInf(f, 1):
			return append(dst, `"Infinity"`...), nil
		case math.IsInf(f, -1):
			return append(dst, `"-Infinity"`...), nil
		}
		return strconv.AppendFloat(dst, f, 'g', -1, bits), nil
	case kBytes, kFixed:
		switch v := native.(type) {
		case []byte:
			dst = append(dst, '"')
			dst = base64.StdEncoding.AppendEncode(dst, v)
			return append(dst, '"'), nil
		case *big.Rat:
			return appendString(dst, v.FloatString(n.scale)), nil
		}
		return nil, errRender
	case kString, kEnum:
		s, ok := native.(string)
		if !ok {
			return nil, errRender
		}
		return appendString(dst, s), nil
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
			dst = append(appendString(dst, k), ':')
			var err error
			if dst, err = renderJSON(dst, n.items, m[k]); err != nil {
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
		for i := range n.fields {
			f := &n.fields[i]
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, f.key...)
			var err error
			if dst, err = renderJSON(dst, f.node, m[f.name]); err != nil {
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
			for _, b := range n.branches {
				if b.matches(name) {
					return renderJSON(dst, b, v)
				}
			}
		}
		return nil, errRender
	}
	return nil, errRender
}

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func appendString(dst []byte, s string) []byte {
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
