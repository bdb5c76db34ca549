package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/linkedin/goavro/v2"
)

// This file reads events given as JSON, for `residency explain`: the
// routing fields alone (FieldsFromJSON), or a whole event in Avro JSON or
// plain JSON encoded with a writer schema (EncodeJSON, ResolveSchema), or
// the records of an Avro object container file (ContainerBodies).

// EncodeJSON encodes data, one event as JSON, with the writer schema text
// as bare Avro binary. The JSON is read as Avro JSON (unions tagged with
// their branch) or, failing that, plain JSON (unions untagged, timestamps as
// numbers or RFC 3339). An error says why the JSON does not fit.
func EncodeJSON(text string, data []byte) ([]byte, error) {
	codec, err := goavro.NewCodec(text)
	if err != nil {
		return nil, err
	}
	native, err := jsonToNative(codec, data)
	if err != nil {
		return nil, err
	}
	body, err := codec.BinaryFromNative(nil, native)
	if err != nil {
		return nil, fmt.Errorf("the JSON does not fit the schema %s: %w", SchemaName(text), err)
	}
	return body, nil
}

// ContainerBodies reads an Avro object container file: every record as
// bare Avro binary, and the file's writer schema.
func ContainerBodies(data []byte) (bodies [][]byte, writerSchema string, err error) {
	ocf, err := goavro.NewOCFReader(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("avro container file: %w", err)
	}
	codec := ocf.Codec()
	for ocf.Scan() {
		native, err := ocf.Read()
		if err != nil {
			return nil, "", fmt.Errorf("avro container file: %w", err)
		}
		body, err := codec.BinaryFromNative(nil, native)
		if err != nil {
			return nil, "", fmt.Errorf("avro container file: %w", err)
		}
		bodies = append(bodies, body)
	}
	if err := ocf.Err(); err != nil {
		return nil, "", fmt.Errorf("avro container file: %w", err)
	}
	return bodies, codec.Schema(), nil
}

// OnlyRoutingFields reports whether data is a JSON object holding at least
// one of the routing fields (at countryPath, userIDPath) and nothing else.
func OnlyRoutingFields(data []byte, countryPath, userIDPath string) bool {
	doc, ok := jsonObject(data)
	if !ok {
		return false
	}
	return onlyRoutingFields(doc, [][]string{strings.Split(countryPath, "."), strings.Split(userIDPath, ".")})
}

// onlyRoutingFields reports whether doc holds at least one routing field
// and nothing else: every key lies on the path of one.
func onlyRoutingFields(doc map[string]any, paths [][]string) bool {
	if len(doc) == 0 {
		return false
	}
	for k, v := range doc {
		var rest [][]string
		terminal := false
		for _, p := range paths {
			if p[0] != k {
				continue
			}
			if len(p) == 1 {
				terminal = true
			} else {
				rest = append(rest, p[1:])
			}
		}
		switch sub, isObj := v.(map[string]any); {
		case terminal:
		case len(rest) > 0 && isObj && onlyRoutingFields(sub, rest):
		default:
			return false
		}
	}
	return true
}

// FieldsFromJSON reads the routing fields (the country at countryPath and
// the user id at userIDPath, dotted paths as ExtractorConfig's) of a JSON
// object: each a string (or Avro JSON's {"string": "US"}), null or absent.
// At least one must be there.
func FieldsFromJSON(data []byte, countryPath, userIDPath string) (Fields, error) {
	doc, ok := jsonObject(data)
	if !ok {
		var v any
		if err := json.Unmarshal(data, &v); err != nil {
			return Fields{}, fmt.Errorf("not JSON: %w", err)
		}
		return Fields{}, errors.New("want a JSON object with the routing fields, e.g. {\"country\": \"US\", \"user_id\": \"u-1\"}")
	}
	paths := []string{countryPath, userIDPath}
	country, hasCountry, err := jsonString(doc, paths[0])
	if err != nil {
		return Fields{}, err
	}
	user, hasUser, err := jsonString(doc, paths[1])
	if err != nil {
		return Fields{}, err
	}
	if !hasCountry && !hasUser {
		return Fields{}, fmt.Errorf("neither %s nor %s is set (the routing fields, from schemas.country_field and user_id_field)", paths[0], paths[1])
	}
	f := Fields{HasCountry: hasCountry}
	if hasCountry {
		f.Country = []byte(country)
	}
	if hasUser {
		f.UserID = []byte(user)
	}
	return f, nil
}

// jsonString reads the string at a dotted path of doc; ok is false when it
// is absent or null.
func jsonString(doc map[string]any, path string) (s string, ok bool, err error) {
	segs := strings.Split(path, ".")
	var v any = doc
	for i, seg := range segs {
		obj, isObj := v.(map[string]any)
		if !isObj {
			return "", false, fmt.Errorf("%s: %s is not an object", path, strings.Join(segs[:i], "."))
		}
		if v = obj[seg]; v == nil {
			return "", false, nil
		}
	}
	if u, isObj := v.(map[string]any); isObj && len(u) == 1 {
		for _, inner := range u { // Avro JSON: a union tagged with its branch
			v = inner
		}
	}
	switch v := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return v, true, nil
	}
	return "", false, fmt.Errorf("%s: want a string or null, got %s", path, jsonKind(v))
}

func jsonKind(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

func jsonObject(data []byte) (map[string]any, bool) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil || doc == nil {
		return nil, false
	}
	return doc, true
}

// ResolveSchema reads a writer schema given as an .avsc file or by full
// name: an embedded schema, or one of the catalogue directory. A name
// several catalogue files share is refused (say which file).
func ResolveSchema(ref, catalogueDir string) (text, name string, err error) {
	if st, err := os.Stat(ref); err == nil && !st.IsDir() {
		b, err := os.ReadFile(ref)
		if err != nil {
			return "", "", err
		}
		return string(b), SchemaName(string(b)), nil
	}
	var found []string
	var texts []string
	for file, t := range Embedded() {
		if SchemaName(t) == ref {
			found, texts = append(found, "embedded "+file), append(texts, t)
		}
	}
	if catalogueDir != "" {
		files, _ := filepath.Glob(filepath.Join(catalogueDir, "*.avsc"))
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err == nil && SchemaName(string(b)) == ref {
				found, texts = append(found, file), append(texts, string(b))
			}
		}
	}
	switch {
	case len(found) == 1:
		return texts[0], ref, nil
	case len(found) > 1 && len(slices.Compact(slices.Sorted(slices.Values(texts)))) == 1:
		return texts[0], ref, nil // the same schema twice
	case len(found) > 1:
		slices.Sort(found)
		return "", "", fmt.Errorf("%q names %d different schemas (%s): give the .avsc file", ref, len(found), strings.Join(found, ", "))
	}
	return "", "", fmt.Errorf("%q is neither a readable .avsc file nor the full name of an embedded or catalogue schema", ref)
}

// SchemaName is the full name of a named schema's JSON text, or "".
func SchemaName(text string) string {
	var s struct{ Name, Namespace string }
	if json.Unmarshal([]byte(text), &s) != nil || s.Name == "" {
		return ""
	}
	if strings.Contains(s.Name, ".") || s.Namespace == "" {
		return s.Name
	}
	return s.Namespace + "." + s.Name
}

// jsonToNative reads an event in Avro JSON (unions tagged with their branch)
// or, failing that, plain JSON (unions untagged, timestamps as numbers).
func jsonToNative(codec *goavro.Codec, data []byte) (any, error) {
	native, _, avroErr := codec.NativeFromTextual(data)
	if avroErr == nil {
		return native, nil
	}
	var doc any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	var schema any
	if err := json.Unmarshal([]byte(codec.Schema()), &schema); err != nil {
		return nil, err
	}
	p := &plainJSON{named: map[string]any{}}
	native, err := p.convert(doc, schema, "")
	if err != nil {
		return nil, fmt.Errorf("the JSON fits the user event schema neither as Avro JSON (%v) nor as plain JSON (%w)", avroErr, err)
	}
	return native, nil
}

// plainJSON converts plain JSON to goavro's native form, guided by the
// schema.
type plainJSON struct {
	named map[string]any
}

func (p *plainJSON) convert(v, schema any, path string) (any, error) {
	switch s := schema.(type) {
	case string:
		if def, ok := p.named[s]; ok {
			return p.convert(v, def, path)
		}
		return primitive(v, s, path)
	case []any: // union
		if v == nil {
			return nil, nil
		}
		var errs []error
		for _, branch := range s {
			if branch == "null" {
				continue
			}
			c, err := p.convert(v, branch, path)
			if err == nil {
				return goavro.Union(typeName(branch), c), nil
			}
			errs = append(errs, err)
		}
		return nil, fmt.Errorf("%s: fits no branch of the union: %w", path, errors.Join(errs...))
	case map[string]any:
		t, _ := s["type"].(string)
		if name, ok := s["name"].(string); ok {
			p.named[name] = s
			if ns, ok := s["namespace"].(string); ok {
				p.named[ns+"."+name] = s
			}
		}
		switch t {
		case "record":
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an object", path)
			}
			out := map[string]any{}
			for _, f := range s["fields"].([]any) {
				fd := f.(map[string]any)
				name := fd["name"].(string)
				fv, present := obj[name]
				if !present {
					continue // goavro uses the field default, or reports it missing
				}
				c, err := p.convert(fv, fd["type"], path+"."+name)
				if err != nil {
					return nil, err
				}
				out[name] = c
			}
			return out, nil
		case "enum":
			if str, ok := v.(string); ok {
				return str, nil
			}
			return nil, fmt.Errorf("%s: want an enum symbol", path)
		case "array":
			arr, ok := v.([]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an array", path)
			}
			out := make([]any, len(arr))
			for i, x := range arr {
				c, err := p.convert(x, s["items"], fmt.Sprintf("%s[%d]", path, i))
				if err != nil {
					return nil, err
				}
				out[i] = c
			}
			return out, nil
		case "map":
			obj, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an object", path)
			}
			out := map[string]any{}
			for k, x := range obj {
				c, err := p.convert(x, s["values"], path+"."+k)
				if err != nil {
					return nil, err
				}
				out[k] = c
			}
			return out, nil
		case "fixed":
			str, ok := v.(string)
			if !ok {
				return nil, fmt.Errorf("%s: want a string of bytes", path)
			}
			return []byte(str), nil
		default:
			if lt, _ := s["logicalType"].(string); lt == "timestamp-millis" || lt == "timestamp-micros" {
				if n, ok := v.(json.Number); ok {
					ms, err := n.Int64()
					if err != nil {
						return nil, fmt.Errorf("%s: %w", path, err)
					}
					if lt == "timestamp-micros" {
						return time.UnixMicro(ms).UTC(), nil
					}
					return time.UnixMilli(ms).UTC(), nil
				}
				if str, ok := v.(string); ok {
					return time.Parse(time.RFC3339Nano, str)
				}
			}
			return p.convert(v, t, path)
		}
	}
	return nil, fmt.Errorf("%s: unsupported schema", path)
}

func typeName(schema any) string {
	switch s := schema.(type) {
	case string:
		return s
	case map[string]any:
		if name, ok := s["name"].(string); ok {
			if ns, ok := s["namespace"].(string); ok {
				return ns + "." + name
			}
			return name
		}
		t, _ := s["type"].(string)
		return t
	}
	return ""
}

func primitive(v any, t, path string) (any, error) {
	bad := func() (any, error) { return nil, fmt.Errorf("%s: want %s, got %T", path, t, v) }
	switch t {
	case "null":
		if v == nil {
			return nil, nil
		}
		return bad()
	case "boolean":
		if b, ok := v.(bool); ok {
			return b, nil
		}
	case "string":
		if s, ok := v.(string); ok {
			return s, nil
		}
	case "bytes":
		if s, ok := v.(string); ok {
			return []byte(s), nil
		}
	case "int", "long":
		if n, ok := v.(json.Number); ok {
			i, err := n.Int64()
			if err != nil {
				return bad()
			}
			if t == "int" {
				return int32(i), nil
			}
			return i, nil
		}
	case "float", "double":
		if n, ok := v.(json.Number); ok {
			f, err := n.Float64()
			if err != nil {
				return bad()
			}
			if t == "float" {
				return float32(f), nil
			}
			return f, nil
		}
	}
	return bad()
}
