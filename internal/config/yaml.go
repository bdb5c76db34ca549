package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// checker walks a YAML document against the Go type it is decoded into.
type checker struct {
	ps *problems
	// lookup reads the environment for ${VAR} expansion; nil: no expansion.
	lookup func(string) (string, bool)
	// orig holds the text of every scalar expansion changed, as written in
	// the file: messages show it rather than a variable's value.
	orig map[*yaml.Node]string
}

// checkYAML expands ${VAR} in every value (when lookup is set) and walks
// the YAML node n against t, the Go type of the field at path, and reports
// every unknown field and every value of the wrong kind by its field path
// (router.batch_size, kafka.clusters.eu.tls.ca_file, sinks[0].store).
// yaml.v3's own errors name Go types (kafka.Cluster, time.Duration) and
// stop at the first unknown field; these name fields, and list every
// problem.
func (k *checker) check(n *yaml.Node, t reflect.Type, path string) {
	ps := k.ps
	if n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return
		}
		n = n.Content[0]
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	field := path
	if field == "" {
		field = "(top level)"
	}
	if n.Kind == yaml.ScalarNode && k.lookup != nil && strings.Contains(n.Value, "$") {
		if _, done := k.orig[n]; !done { // an alias shares its node
			v, err := expand(n.Value, k.lookup)
			if err != nil {
				ps.add(field, "%v", err)
				return
			}
			if v != n.Value {
				k.orig[n] = n.Value
				n.Value = v
				if n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 {
					n.Tag = "" // a plain scalar: resolve what the value spells
				}
			}
		}
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return // the field's default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// A type with its own YAML form (e.g. redis.tls: true or a mapping)
	// reads a scalar itself; a mapping is checked field by field below.
	if reflect.PointerTo(t).Implements(unmarshalerType) && n.Kind == yaml.ScalarNode {
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			ps.add(field, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
		return
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			ps.add(field, "want a duration such as 500ms, 10s or 2m, got %s", k.kindOf(n))
			return
		}
		var d time.Duration
		if err := n.Decode(&d); err != nil {
			ps.add(field, "%s is not a duration: write it with a unit, such as 500ms, 10s or 2m", k.show(n))
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			ps.add(field, "want a mapping of fields (%s), got %s", strings.Join(yamlFields(t), ", "), k.kindOf(n))
			return
		}
		fields := map[string]reflect.StructField{}
		for i := range t.NumField() {
			f := t.Field(i)
			if name := yamlName(f); name != "" {
				fields[name] = f
			}
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, v := n.Content[i], n.Content[i+1]
			sub := joinPath(path, key.Value)
			if line, dup := seen[key.Value]; dup {
				ps.add(sub, "set twice (lines %d and %d)", line, key.Line)
				continue
			}
			seen[key.Value] = key.Line
			f, ok := fields[key.Value]
			if !ok {
				ps.add(sub, "unknown field%s", suggest(key.Value, yamlFields(t)))
				continue
			}
			k.check(v, f.Type, sub)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			ps.add(field, "want a mapping, got %s", k.kindOf(n))
			return
		}
		elem := t.Elem()
		for elem.Kind() == reflect.Pointer {
			elem = elem.Elem()
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, v := n.Content[i], n.Content[i+1]
			// Entries that are sections (kafka.clusters.eu) read as fields;
			// entries keyed by a topic read as an index (framings["a.b"]).
			sub := fmt.Sprintf("%s[%q]", path, key.Value)
			if elem.Kind() == reflect.Struct && elem != durationType {
				sub = joinPath(path, key.Value)
			}
			if key.Kind != yaml.ScalarNode {
				ps.add(field, "a key is %s, want a name", k.kindOf(key))
				continue
			}
			if line, dup := seen[key.Value]; dup {
				ps.add(sub, "set twice (lines %d and %d)", line, key.Line)
				continue
			}
			seen[key.Value] = key.Line
			k.check(v, t.Elem(), sub)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			ps.add(field, "want a list, got %s", k.kindOf(n))
			return
		}
		for i, v := range n.Content {
			k.check(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Interface:
		// anything goes
	default:
		if n.Kind != yaml.ScalarNode {
			ps.add(field, "want %s, got %s", scalarKind(t), k.kindOf(n))
			return
		}
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			ps.add(field, "%s is not %s", k.show(n), scalarKind(t))
		}
	}
}

var (
	durationType    = reflect.TypeFor[time.Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// yamlName is the YAML key of a struct field ("" for none).
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag := f.Tag.Get("yaml")
	name, _, _ := strings.Cut(tag, ",")
	switch name {
	case "-":
		return ""
	case "":
		return strings.ToLower(f.Name)
	}
	return name
}

// yamlFields lists the YAML keys of struct type t, in order.
func yamlFields(t reflect.Type) []string {
	var out []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			out = append(out, name)
		}
	}
	return out
}

func (k *checker) kindOf(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return k.show(n)
}

// show quotes a scalar's value for a message, or what was written in the
// file when ${VAR} expansion changed it: a variable's value may be a
// secret.
func (k *checker) show(n *yaml.Node) string {
	if o, ok := k.orig[n]; ok {
		return fmt.Sprintf("%q (after expansion)", o)
	}
	return fmt.Sprintf("%q", n.Value)
}

// scalarKind says in words what a scalar field holds.
func scalarKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "a whole number"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number, not negative"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	}
	return "a single value"
}

// suggest returns " (did you mean X?)" for the known field closest to
// name, or the list of known fields when none is close.
func suggest(name string, known []string) string {
	best, bestD := "", 3
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "_", "") }
	for _, k := range known {
		if norm(k) == norm(name) {
			return fmt.Sprintf(" (did you mean %s?)", k)
		}
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf(" (did you mean %s?)", best)
	}
	sorted := append([]string(nil), known...)
	sort.Strings(sorted)
	return " (known fields: " + strings.Join(sorted, ", ") + ")"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
