package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrBadSchema: an Avro schema (.avsc) does not parse or breaks the Avro
// specification. Returned when loading configuration, catalogues and
// registry answers, never for an event's bytes.
var ErrBadSchema = errors.New("bad avro schema")

// kind is the Avro type of a schema node.
type kind uint8

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
	kUnion
	kFixed
)

var kindNames = [...]string{"null", "boolean", "int", "long", "float", "double", "bytes", "string", "record", "enum", "array", "map", "union", "fixed"}

func (k kind) String() string { return kindNames[k] }

var primitives = map[string]kind{
	"null": kNull, "boolean": kBoolean, "int": kInt, "long": kLong, "float": kFloat,
	"double": kDouble, "bytes": kBytes, "string": kString,
}

// node is one parsed Avro schema: our own model, independent of goavro, used
// to compile extraction programs and to check compatibility.
type node struct {
	kind    kind
	name    string   // full name of a record, enum or fixed
	aliases []string // full names
	logical string   // logicalType, if any
	scale   int      // a decimal's scale (bytes and fixed)

	fields []*field // record

	symbols        []string // enum
	jsonSymbols    [][]byte // enum symbols as JSON strings, for the transcoder
	enumDefault    string
	hasEnumDefault bool

	items  *node   // array
	values *node   // map
	types  []*node // union branches
	size   int     // fixed
}

// field is one field of a record.
type field struct {
	name       string
	aliases    []string
	typ        *node
	hasDefault bool
	jsonKey    []byte // `"name":`, for the transcoder
}

// shortName is the unqualified name of a named type.
func (n *node) shortName() string {
	if i := strings.LastIndexByte(n.name, '.'); i >= 0 {
		return n.name[i+1:]
	}
	return n.name
}

// describe names a type the way a producer team reads it: "string",
// "record io.x.Device", "union [null, string]".
func (n *node) describe() string {
	switch n.kind {
	case kRecord, kEnum, kFixed:
		return n.kind.String() + " " + n.name
	case kArray:
		return "array of " + n.items.describe()
	case kMap:
		return "map of " + n.values.describe()
	case kUnion:
		parts := make([]string, len(n.types))
		for i, t := range n.types {
			if t.kind == kRecord || t.kind == kEnum || t.kind == kFixed {
				parts[i] = t.name
			} else {
				parts[i] = t.describe()
			}
		}
		return "union [" + strings.Join(parts, ", ") + "]"
	}
	return n.kind.String()
}

// parseSchema parses an Avro schema (JSON text) into our model.
func parseSchema(text string) (*node, error) {
	var v any
	d := json.NewDecoder(strings.NewReader(text))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: not JSON: %v", ErrBadSchema, err)
	}
	if d.More() {
		return nil, fmt.Errorf("%w: trailing data after the schema", ErrBadSchema)
	}
	p := &schemaParser{named: map[string]*node{}}
	n, err := p.parse(v, "")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSchema, err)
	}
	return n, nil
}

type schemaParser struct {
	named map[string]*node
}

func fullName(name, namespace string) string {
	if strings.Contains(name, ".") || namespace == "" {
		return name
	}
	return namespace + "." + name
}

func namespaceOf(full string) string {
	if i := strings.LastIndexByte(full, '.'); i >= 0 {
		return full[:i]
	}
	return ""
}

func (p *schemaParser) parse(v any, ns string) (*node, error) {
	switch s := v.(type) {
	case string:
		return p.ref(s, ns)
	case []any:
		if len(s) == 0 {
			return nil, errors.New("a union needs at least one type")
		}
		u := &node{kind: kUnion}
		seen := map[string]bool{}
		for _, b := range s {
			t, err := p.parse(b, ns)
			if err != nil {
				return nil, err
			}
			if t.kind == kUnion {
				return nil, errors.New("a union may not directly contain a union")
			}
			key := t.kind.String()
			if t.name != "" {
				key = t.name
			}
			if seen[key] {
				return nil, fmt.Errorf("union contains %s twice", key)
			}
			seen[key] = true
			u.types = append(u.types, t)
		}
		return u, nil
	case map[string]any:
		return p.object(s, ns)
	}
	return nil, fmt.Errorf("unexpected JSON %T where a type was expected", v)
}

func (p *schemaParser) ref(s, ns string) (*node, error) {
	if k, ok := primitives[s]; ok {
		return &node{kind: k}, nil
	}
	if n, ok := p.named[fullName(s, ns)]; ok {
		return n, nil
	}
	if n, ok := p.named[s]; ok {
		return n, nil
	}
	return nil, fmt.Errorf("unknown type %q", s)
}

func str(m map[string]any, key string) (string, bool, error) {
	v, ok := m[key]
	if !ok {
		return "", false, nil
	}
	s, isStr := v.(string)
	if !isStr {
		return "", true, fmt.Errorf("%q must be a string", key)
	}
	return s, true, nil
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'):
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return true
}

func (p *schemaParser) define(m map[string]any, ns string, n *node) (string, error) {
	name, ok, err := str(m, "name")
	if err != nil {
		return "", err
	}
	if !ok || name == "" {
		return "", fmt.Errorf("a %s needs a name", n.kind)
	}
	if space, ok, err := str(m, "namespace"); err != nil {
		return "", err
	} else if ok && !strings.Contains(name, ".") {
		ns = space
	}
	n.name = fullName(name, ns)
	for _, part := range strings.Split(n.name, ".") {
		if !validName(part) {
			return "", fmt.Errorf("invalid name %q", n.name)
		}
	}
	if _, dup := p.named[n.name]; dup {
		return "", fmt.Errorf("type %s defined twice", n.name)
	}
	if _, prim := primitives[n.name]; prim {
		return "", fmt.Errorf("a named type may not be called %q", n.name)
	}
	n.aliases, err = aliases(m, namespaceOf(n.name))
	if err != nil {
		return "", err
	}
	p.named[n.name] = n
	return namespaceOf(n.name), nil
}

func aliases(m map[string]any, ns string) ([]string, error) {
	v, ok := m["aliases"]
	if !ok {
		return nil, nil
	}
	list, isList := v.([]any)
	if !isList {
		return nil, errors.New(`"aliases" must be a list of names`)
	}
	out := make([]string, 0, len(list))
	for _, a := range list {
		s, isStr := a.(string)
		if !isStr {
			return nil, errors.New(`"aliases" must be a list of names`)
		}
		out = append(out, fullName(s, ns))
	}
	return out, nil
}

func (p *schemaParser) object(m map[string]any, ns string) (*node, error) {
	t, ok := m["type"]
	if !ok {
		return nil, errors.New(`a type object needs "type"`)
	}
	ts, isStr := t.(string)
	if !isStr {
		// {"type": {...}} or {"type": [...]}: a wrapped type.
		return p.parse(t, ns)
	}
	logical, _, err := str(m, "logicalType")
	if err != nil {
		return nil, err
	}
	switch ts {
	case "record", "error":
		n := &node{kind: kRecord, logical: logical}
		inner, err := p.define(m, ns, n)
		if err != nil {
			return nil, err
		}
		fv, ok := m["fields"].([]any)
		if !ok {
			return nil, fmt.Errorf("record %s needs a list of fields", n.name)
		}
		seen := map[string]bool{}
		for _, f := range fv {
			fm, ok := f.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("record %s: a field must be an object", n.name)
			}
			fname, _, err := str(fm, "name")
			if err != nil || !validName(fname) {
				return nil, fmt.Errorf("record %s: field with invalid name %q", n.name, fname)
			}
			if seen[fname] {
				return nil, fmt.Errorf("record %s: field %s defined twice", n.name, fname)
			}
			seen[fname] = true
			ftv, ok := fm["type"]
			if !ok {
				return nil, fmt.Errorf("record %s: field %s needs a type", n.name, fname)
			}
			ft, err := p.parse(ftv, inner)
			if err != nil {
				return nil, fmt.Errorf("record %s: field %s: %w", n.name, fname, err)
			}
			fld := &field{name: fname, typ: ft, jsonKey: append(appendJSONString(nil, fname), ':')}
			_, fld.hasDefault = fm["default"]
			if al, ok := fm["aliases"].([]any); ok {
				for _, a := range al {
					if s, ok := a.(string); ok {
						fld.aliases = append(fld.aliases, s)
					}
				}
			}
			n.fields = append(n.fields, fld)
		}
		return n, nil
	case "enum":
		n := &node{kind: kEnum, logical: logical}
		if _, err := p.define(m, ns, n); err != nil {
			return nil, err
		}
		sv, ok := m["symbols"].([]any)
		if !ok {
			return nil, fmt.Errorf("enum %s needs a list of symbols", n.name)
		}
		seen := map[string]bool{}
		for _, s := range sv {
			sym, ok := s.(string)
			if !ok || !validName(sym) || seen[sym] {
				return nil, fmt.Errorf("enum %s: invalid or repeated symbol %v", n.name, s)
			}
			seen[sym] = true
			n.symbols = append(n.symbols, sym)
			n.jsonSymbols = append(n.jsonSymbols, appendJSONString(nil, sym))
		}
		if def, ok, err := str(m, "default"); err != nil {
			return nil, fmt.Errorf("enum %s: %w", n.name, err)
		} else if ok {
			if !seen[def] {
				return nil, fmt.Errorf("enum %s: default %q is not one of its symbols", n.name, def)
			}
			n.enumDefault, n.hasEnumDefault = def, true
		}
		return n, nil
	case "fixed":
		n := &node{kind: kFixed, logical: logical}
		if _, err := p.define(m, ns, n); err != nil {
			return nil, err
		}
		num, ok := m["size"].(json.Number)
		if !ok {
			return nil, fmt.Errorf("fixed %s needs a size", n.name)
		}
		size, err := num.Int64()
		if err != nil || size < 0 || size > 1<<20 {
			return nil, fmt.Errorf("fixed %s: invalid size %s", n.name, num)
		}
		n.size = int(size)
		n.scale = scaleOf(m)
		return n, nil
	case "array":
		it, ok := m["items"]
		if !ok {
			return nil, errors.New(`an array needs "items"`)
		}
		items, err := p.parse(it, ns)
		if err != nil {
			return nil, err
		}
		return &node{kind: kArray, items: items, logical: logical}, nil
	case "map":
		vv, ok := m["values"]
		if !ok {
			return nil, errors.New(`a map needs "values"`)
		}
		values, err := p.parse(vv, ns)
		if err != nil {
			return nil, err
		}
		return &node{kind: kMap, values: values, logical: logical}, nil
	}
	if k, ok := primitives[ts]; ok {
		return &node{kind: k, logical: logical, scale: scaleOf(m)}, nil
	}
	// {"type": "SomeNamedType"}
	return p.ref(ts, ns)
}

// scaleOf is the "scale" of a decimal type object, 0 when absent or invalid.
func scaleOf(m map[string]any) int {
	num, ok := m["scale"].(json.Number)
	if !ok {
		return 0
	}
	scale, err := num.Int64()
	if err != nil || scale < 0 || scale > 1<<10 {
		return 0
	}
	return int(scale)
}
