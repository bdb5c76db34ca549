package schemas

import (
	"fmt"
	"slices"
	"strings"
)

// Finding is one problem found in a schema, in words a producer team reads.
type Finding struct {
	// Field is the dotted path of the field concerned ("device.os"), or
	// empty for the whole record.
	Field string
	// Problem says what is wrong and what it means for the events.
	Problem string
}

// String renders the finding as "field: problem".
func (f Finding) String() string {
	if f.Field == "" {
		return f.Problem
	}
	return f.Field + ": " + f.Problem
}

// FieldCheck is what CheckRoutable found about one jurisdiction field.
type FieldCheck struct {
	// Path is the configured field path ("country").
	Path string
	// Type describes the field's type in the schema ("union [null, string]"),
	// empty when the field is missing.
	Type string
	// OK is true when the router can read the field.
	OK bool
	// Problem says why not, when OK is false.
	Problem string
}

// RoutingCheck is the answer of CheckRoutable.
type RoutingCheck struct {
	// Country is the check of the country field.
	Country FieldCheck
	// UserID is the check of the user id field.
	UserID FieldCheck
}

// Routable is true when both jurisdiction fields resolve.
func (c RoutingCheck) Routable() bool { return c.Country.OK && c.UserID.OK }

// CheckRoutable tells whether events written with schemaJSON can still be
// placed by the router: the country path (default "country") must reach a
// string, an enum or a union of null with one of them, and the user id path
// (default "user_id") likewise. The error is ErrBadSchema-wrapped when the
// schema does not parse, or names the bad path.
func CheckRoutable(schemaJSON, countryField, userIDField string) (RoutingCheck, error) {
	if countryField == "" {
		countryField = "country"
	}
	if userIDField == "" {
		userIDField = "user_id"
	}
	root, err := parseSchema(schemaJSON)
	if err != nil {
		return RoutingCheck{}, err
	}
	var out RoutingCheck
	for _, x := range []struct {
		path string
		dst  *FieldCheck
		what string
	}{
		{countryField, &out.Country, "every event would go to quarantine (no country)"},
		{userIDField, &out.UserID, "pins (per-user overrides) could not apply"},
	} {
		segs, err := splitPath(x.path)
		if err != nil {
			return RoutingCheck{}, fmt.Errorf("field path %q: %w", x.path, err)
		}
		*x.dst = checkField(root, segs, x.path, x.what)
	}
	return out, nil
}

// checkField resolves one jurisdiction field path in root.
func checkField(root *node, segs []string, path, consequence string) FieldCheck {
	fc := FieldCheck{Path: path}
	if root.kind != kRecord {
		fc.Problem = fmt.Sprintf("the schema is a %s, not a record", root.describe())
		return fc
	}
	t := root
	for i, seg := range segs {
		rec := t
		if t.kind == kUnion {
			// Follow the first record branch that has the field (the
			// extractor follows whichever branch an event takes).
			rec = nil
			for _, b := range t.types {
				if b.kind == kRecord && (rec == nil || rec.kind != kRecord || !hasField(rec, seg)) {
					rec = b
				}
			}
		}
		if rec == nil || rec.kind != kRecord {
			fc.Problem = fmt.Sprintf("%s is a %s, not a record, so %s cannot be reached", describeSegs(segs[:i]), t.describe(), path)
			return fc
		}
		j := slices.IndexFunc(rec.fields, func(f *field) bool { return f.name == seg })
		if j < 0 {
			fc.Problem = fmt.Sprintf("the field is missing, so %s", consequence)
			return fc
		}
		t = rec.fields[j].typ
	}
	fc.Type = t.describe()
	if err := (&compiler{records: map[string]*prog{}}).capture(&prog{}, t, 0, path); err != nil {
		fc.Problem = fmt.Sprintf("it is a %s; the router reads only a string, an enum, or a union of null with one of them", t.describe())
		return fc
	}
	fc.OK = true
	return fc
}

func hasField(rec *node, name string) bool {
	return slices.ContainsFunc(rec.fields, func(f *field) bool { return f.name == name })
}

func describeSegs(segs []string) string {
	if len(segs) == 0 {
		return "the event"
	}
	return strings.Join(segs, ".")
}

// CheckBackward tells whether readerJSON (the new schema) can read data
// written with writerJSON (the previous one) under the Avro schema
// resolution rules: BACKWARD compatibility in registry terms. No findings
// means compatible. The error is ErrBadSchema-wrapped when a schema does not
// parse.
func CheckBackward(readerJSON, writerJSON string) ([]Finding, error) {
	r, err := parseSchema(readerJSON)
	if err != nil {
		return nil, fmt.Errorf("new schema: %w", err)
	}
	w, err := parseSchema(writerJSON)
	if err != nil {
		return nil, fmt.Errorf("previous schema: %w", err)
	}
	c := &compatChecker{seen: map[[2]*node]bool{}}
	c.resolve(r, w, "")
	return c.findings, nil
}

type compatChecker struct {
	seen     map[[2]*node]bool
	findings []Finding
}

func (c *compatChecker) add(path, format string, args ...any) {
	c.findings = append(c.findings, Finding{Field: path, Problem: fmt.Sprintf(format, args...)})
}

// promotions lists, per writer kind, the reader kinds Avro converts it to.
var promotions = map[kind][]kind{
	kInt:    {kLong, kFloat, kDouble},
	kLong:   {kFloat, kDouble},
	kFloat:  {kDouble},
	kString: {kBytes},
	kBytes:  {kString},
}

// sameName is Avro's name match: equal unqualified names, or an alias of
// the reader naming the writer.
func sameName(r, w *node) bool {
	if r.shortName() == w.shortName() {
		return true
	}
	for _, a := range r.aliases {
		if a == w.name {
			return true
		}
	}
	return false
}

// matches is the shallow match Avro uses to pick a reader union branch.
func matches(r, w *node) bool {
	if r.kind == w.kind {
		switch r.kind {
		case kRecord, kEnum, kFixed:
			return sameName(r, w)
		}
		return true
	}
	return slices.Contains(promotions[w.kind], r.kind)
}

func (c *compatChecker) resolve(r, w *node, path string) {
	if w.kind == kUnion {
		for _, wb := range w.types {
			if r.kind != kUnion && !matches(r, wb) {
				c.add(path, "the previous schema allowed %s here, which the new type %s cannot hold; events written with the previous schema would fail to decode", wb.describe(), r.describe())
				continue
			}
			c.resolve(r, wb, path)
		}
		return
	}
	if r.kind == kUnion {
		for _, rb := range r.types {
			if matches(rb, w) {
				c.resolve(rb, w, path)
				return
			}
		}
		c.add(path, "the previous schema allowed %s here, which the new type %s cannot hold; events written with the previous schema would fail to decode", w.describe(), r.describe())
		return
	}
	if !matches(r, w) {
		c.add(path, "the type changed from %s to %s, which Avro cannot convert; events written with the previous schema would fail to decode", w.describe(), r.describe())
		return
	}
	key := [2]*node{r, w}
	if c.seen[key] {
		return
	}
	c.seen[key] = true
	switch r.kind {
	case kRecord:
		for _, rf := range r.fields {
			sub := rf.name
			if path != "" {
				sub = path + "." + rf.name
			}
			wf := findField(w, rf)
			if wf == nil {
				if !rf.hasDefault {
					c.add(sub, "this field is new and has no default, so events written with the previous schema cannot be read; give it a default (e.g. null in a [\"null\", ...] union)")
				}
				continue
			}
			c.resolve(rf.typ, wf.typ, sub)
		}
	case kEnum:
		for _, s := range w.symbols {
			if !slices.Contains(r.symbols, s) && !r.hasEnumDefault {
				c.add(path, "enum %s no longer has the symbol %s and has no default symbol, so events with %s would fail to decode", r.name, s, s)
			}
		}
	case kFixed:
		if r.size != w.size {
			c.add(path, "fixed %s changed size from %d to %d bytes", r.name, w.size, r.size)
		}
	case kArray:
		c.resolve(r.items, w.items, path+"[]")
	case kMap:
		c.resolve(r.values, w.values, path+"{}")
	}
}

// findField finds the writer's field for reader field rf: by name, then by
// the reader field's aliases.
func findField(w *node, rf *field) *field {
	for _, wf := range w.fields {
		if wf.name == rf.name {
			return wf
		}
	}
	for _, wf := range w.fields {
		if slices.Contains(rf.aliases, wf.name) {
			return wf
		}
	}
	return nil
}
