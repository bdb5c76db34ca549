package rules

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with a ruleset, with where it is.
type Problem struct {
	// Path locates the problem in the ruleset, e.g. `jurisdictions[2] (EU)`;
	// empty for a problem with the whole document.
	Path string
	// Line is the line of the YAML document the problem is on; 0 when
	// unknown.
	Line int
	// Message says what is wrong, e.g. `country "XX" is not an ISO 3166-1
	// alpha-2 code`.
	Message string
}

// String formats the problem as `line 12: jurisdictions[2] (EU): message`.
func (p Problem) String() string {
	var b strings.Builder
	if p.Line > 0 {
		fmt.Fprintf(&b, "line %d: ", p.Line)
	}
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// ValidationError is returned by Parse for a ruleset that must not take
// effect. It lists every problem found, in document order.
type ValidationError struct {
	// Problems are the problems found; never empty.
	Problems []Problem
}

// Error lists the problems, one per line after the first.
func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid ruleset: " + e.Problems[0].String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "invalid ruleset: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// validator collects the problems of one ruleset.
type validator struct {
	root     *yaml.Node // the document's root mapping; nil when unknown
	problems []Problem
}

// addf records a problem at the node found by following keys (map keys as
// strings, sequence indexes as ints) from the document root.
func (v *validator) addf(path string, keys []any, format string, args ...any) {
	v.problems = append(v.problems, Problem{Path: path, Line: lineOf(v.root, keys), Message: fmt.Sprintf(format, args...)})
}

// lineOf follows keys from n and returns the line of the deepest node found.
func lineOf(n *yaml.Node, keys []any) int {
	if n == nil {
		return 0
	}
	line := n.Line
	for _, k := range keys {
		var next *yaml.Node
		switch k := k.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == k {
						next = n.Content[i+1]
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && k < len(n.Content) {
				next = n.Content[k]
			}
		}
		if next == nil {
			return line
		}
		n, line = next, next.Line
	}
	return line
}

// where formats a list element's location, e.g. `jurisdictions[2] (EU)`.
func where(list string, i int, name string) string {
	s := list + "[" + strconv.Itoa(i) + "]"
	if name != "" {
		s += " (" + name + ")"
	}
	return s
}

// validName reports whether a name is safe for headers, topics and metric
// labels: ASCII letters, digits, '.', '_' and '-'.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// countryProblem explains why c is not acceptable, or returns "".
func countryProblem(c string) string {
	if assigned[c] {
		return ""
	}
	if up := strings.ToUpper(c); up != c && assigned[up] {
		return fmt.Sprintf("country %q must be written in upper case: %q", c, up)
	}
	msg := fmt.Sprintf("country %q is not an ISO 3166-1 alpha-2 code", c)
	if len(c) == 2 && c == strings.ToUpper(c) {
		msg = fmt.Sprintf("country %q is not an assigned ISO 3166-1 alpha-2 code", c)
	}
	if hint, ok := codeHints[strings.ToUpper(c)]; ok {
		msg += " (" + hint + ")"
	}
	return msg
}

// validate checks r and returns its problems in document order.
func (v *validator) validate(r *Ruleset) {
	if len(r.Jurisdictions) == 0 {
		v.addf("jurisdictions", []any{"jurisdictions"}, "no jurisdiction is defined: every event would be quarantined")
	}
	if len(r.Regions) == 0 {
		v.addf("regions", []any{"regions"}, "no region is defined")
	}
	regions := make(map[string]int, len(r.Regions))
	for i, g := range r.Regions {
		if _, dup := regions[g.Name]; !dup && g.Name != "" {
			regions[g.Name] = i
		}
	}

	names := map[string]int{}
	countryAt := map[string]int{} // country -> jurisdiction index
	for i, j := range r.Jurisdictions {
		at := where("jurisdictions", i, j.Name)
		k := []any{"jurisdictions", i}
		switch {
		case j.Name == "":
			v.addf(at, append(k, "name"), "jurisdiction has no name")
		case !validName(j.Name):
			v.addf(at, append(k, "name"), "name %q may contain only ASCII letters, digits, '.', '_' and '-' (at most 64)", j.Name)
		}
		if first, dup := names[j.Name]; dup && j.Name != "" {
			v.addf(at, append(k, "name"), "duplicate jurisdiction name %q (first defined at jurisdictions[%d])", j.Name, first)
		} else if j.Name != "" {
			names[j.Name] = i
		}
		if j.Region == "" {
			v.addf(at, k, "jurisdiction has no region: every jurisdiction must map to exactly one region")
		} else if _, ok := regions[j.Region]; !ok {
			v.addf(at, append(k, "region"), "region %q is not defined in regions", j.Region)
		}
		seen := map[string]bool{}
		for n, c := range j.Countries {
			ck := append(append([]any(nil), k...), "countries", n)
			if msg := countryProblem(c); msg != "" {
				v.addf(at, ck, "%s", msg)
				continue
			}
			if seen[c] {
				v.addf(at, ck, "country %q is listed twice", c)
				continue
			}
			seen[c] = true
			if other, dup := countryAt[c]; dup {
				v.addf(at, ck, "country %q is already in jurisdiction %q (jurisdictions[%d]): a country belongs to one jurisdiction", c, r.Jurisdictions[other].Name, other)
				continue
			}
			countryAt[c] = i
		}
	}

	names = map[string]int{}
	type clusterTopic struct{ cluster, topic string }
	topics := map[clusterTopic]int{}
	for i, g := range r.Regions {
		at := where("regions", i, g.Name)
		k := []any{"regions", i}
		switch {
		case g.Name == "":
			v.addf(at, append(k, "name"), "region has no name")
		case !validName(g.Name):
			v.addf(at, append(k, "name"), "name %q may contain only ASCII letters, digits, '.', '_' and '-' (at most 64)", g.Name)
		}
		if first, dup := names[g.Name]; dup && g.Name != "" {
			v.addf(at, append(k, "name"), "duplicate region name %q (first defined at regions[%d])", g.Name, first)
		} else if g.Name != "" {
			names[g.Name] = i
		}
		if g.Cluster == "" {
			v.addf(at, k, "region has no cluster: name the Kafka cluster that holds its pinned topic")
		}
		if g.Topic == "" {
			v.addf(at, k, "region has no topic: name its pinned topic")
		} else if !validName(g.Topic) {
			v.addf(at, append(k, "topic"), "topic %q is not a valid Kafka topic name", g.Topic)
		}
		if g.Cluster != "" && g.Topic != "" {
			ct := clusterTopic{g.Cluster, g.Topic}
			if other, dup := topics[ct]; dup {
				v.addf(at, append(k, "topic"), "pinned topic %q on cluster %q is already region %q's: regions must not share a pinned topic", g.Topic, g.Cluster, r.Regions[other].Name)
			} else {
				topics[ct] = i
			}
		}
	}

	names = map[string]int{}
	for i, s := range r.Stores {
		at := where("stores", i, s.Name)
		k := []any{"stores", i}
		switch {
		case s.Name == "":
			v.addf(at, append(k, "name"), "store has no name")
		case !validName(s.Name):
			v.addf(at, append(k, "name"), "name %q may contain only ASCII letters, digits, '.', '_' and '-' (at most 64)", s.Name)
		}
		if first, dup := names[s.Name]; dup && s.Name != "" {
			v.addf(at, append(k, "name"), "duplicate store name %q (first defined at stores[%d])", s.Name, first)
		} else if s.Name != "" {
			names[s.Name] = i
		}
		seen := map[string]bool{}
		for n, g := range s.Regions {
			gk := append(append([]any(nil), k...), "regions", n)
			if _, ok := regions[g]; !ok {
				v.addf(at, gk, "approved for region %q, which is not defined in regions", g)
			} else if seen[g] {
				v.addf(at, gk, "region %q is listed twice", g)
			}
			seen[g] = true
		}
	}

	if r.Unplaceable != "" && r.Unplaceable != UnplaceableQuarantine {
		v.addf("unplaceable", []any{"unplaceable"}, "%q is not allowed: the only accepted value is %q (nothing is guessed)", r.Unplaceable, UnplaceableQuarantine)
	}
}
