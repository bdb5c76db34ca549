package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
)

// output is the --output flag every command that reports shares (rules
// show/history/diff/pins, explain, schemas check, replay, topics, config
// lint and print, purge, erase, residue, version):
// "text" for people (the default) or "json" for programs. --json is kept
// as short for --output json where it existed.
type output string

// The values of --output.
const (
	outputText output = "text"
	outputJSON output = "json"
)

// addOutput registers --output (and --json) on fs; the result is "text"
// unless a flag says otherwise. A value other than text and json is a
// usage error (exit 2) of flag parsing.
func addOutput(fs *flag.FlagSet) *output {
	o := outputText
	fs.Var(&o, "output", "report format: text or json")
	fs.BoolFunc("json", "print JSON (short for --output json)", func(s string) error {
		if s == "true" {
			o = outputJSON
		}
		return nil
	})
	return &o
}

func (o *output) String() string {
	if o == nil {
		return string(outputText)
	}
	return string(*o)
}

// Set implements flag.Value.
func (o *output) Set(s string) error {
	switch output(s) {
	case outputText, outputJSON:
		*o = output(s)
		return nil
	}
	return fmt.Errorf("%q is not text or json", s)
}

// JSON reports whether the report is to be JSON.
func (o *output) JSON() bool { return o != nil && *o == outputJSON }

// writeJSON writes v as one JSON document on one line (HTML characters
// unescaped), for jq and for programs reading one document a line.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}
