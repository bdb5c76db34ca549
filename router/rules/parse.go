package rules

import (
	"bytes"
	"fmt"

	"gopkg.in/yaml.v3"
)

// Parse decodes a ruleset from YAML, validates it and compiles it. Unknown
// fields are refused. The returned ruleset has version 0.
func Parse(data []byte) (*Ruleset, error) {
	var r Ruleset
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("rules: parse: %w", err)
	}
	if err := r.compile(); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	return &r, nil
}
