package config

import (
	"fmt"
	"regexp"
	"strings"
)

// varName is what ${NAME} may name: an environment variable's name.
var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// expand returns s with every ${NAME} replaced by the value of the
// environment variable NAME (lookup) and every $$ by $; any other $ is
// kept as it is. An unset variable, a ${ without its closing } and a name
// that is not a variable's (${A:-b}, ${}) are errors; the error never holds
// a variable's value.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", fmt.Errorf("%s: ${ without its closing } (write $$ for a literal $)", s[i:])
			}
			name := s[i+2 : i+2+end]
			switch {
			case name == "":
				return "", fmt.Errorf("${} names no variable")
			case !varName.MatchString(name):
				return "", fmt.Errorf("${%s}: %q is not a variable name (letters, digits and _; defaults such as ${A:-b} are not supported)", name, name)
			}
			v, ok := lookup(name)
			if !ok {
				return "", fmt.Errorf("${%s}: the environment variable %s is not set", name, name)
			}
			b.WriteString(v)
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), nil
}
