package rules

import (
	"bytes"
	"errors"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// UnplaceableQuarantine is the only accepted value of Ruleset.Unplaceable:
// an event whose country is missing or unknown goes to quarantine.
const UnplaceableQuarantine = "quarantine"

// Parse decodes a ruleset from YAML, validates it and compiles it. Unknown
// fields are refused. Every problem found is reported at once in a
// *ValidationError (also for YAML that does not decode). The returned ruleset
// has version 0 and, as its Digest, the SHA-256 of data (Hash).
func Parse(data []byte) (*Ruleset, error) {
	var r Ruleset
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&r); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ValidationError{Problems: []Problem{{Message: "the document is empty"}}}
		}
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &ValidationError{Problems: []Problem{{Line: extra.Line, Message: "more than one YAML document: a ruleset is one document"}}}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(err)
	}
	v := validator{}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		v.root = doc.Content[0]
	}
	v.validate(&r)
	if len(v.problems) > 0 {
		return nil, &ValidationError{Problems: v.problems}
	}
	if err := r.compile(); err != nil {
		return nil, &ValidationError{Problems: []Problem{{Message: err.Error()}}}
	}
	r.digest = Hash(data)
	r.content = bytes.Clone(data)
	return &r, nil
}

// FileError is a ruleset file that does not parse: the file and the
// *ValidationError.
type FileError struct {
	// File is the file's path.
	File string
	// Err is the parse error (a *ValidationError).
	Err error
}

func (e *FileError) Error() string { return e.File + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// ReadFile reads and parses a ruleset file (Parse), returning its content
// too. A file that cannot be read is the *fs.PathError of reading it; one
// that does not parse a *FileError.
func ReadFile(path string) ([]byte, *Ruleset, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	r, err := Parse(data)
	if err != nil {
		return nil, nil, &FileError{File: path, Err: err}
	}
	return data, r, nil
}

var yamlLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlError turns a yaml.v3 decoding error into a *ValidationError.
func yamlError(err error) *ValidationError {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{strings.TrimPrefix(err.Error(), "yaml: ")}
	}
	ve := &ValidationError{}
	for _, m := range msgs {
		p := Problem{Message: m}
		if sm := yamlLine.FindStringSubmatch(m); sm != nil {
			p.Line, _ = strconv.Atoi(sm[1])
			p.Message = sm[2]
		}
		ve.Problems = append(ve.Problems, p)
	}
	return ve
}
