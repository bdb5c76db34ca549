package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDemoRoutesEveryEventWhereTheRulesetSendsIt(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"demo", "--events", "600"}, nil, &out, &errOut)
	if code != exitOK {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	s := out.String()
	for _, want := range []string{"region us", "region eu", "region uk", "region in", "region br",
		"quarantine no_country", "quarantine unknown_country", "dead-letter ", "total", "Every event is exactly where"} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, "WRONG") || strings.Contains(s, "MISMATCH") {
		t.Errorf("demo found misrouted events:\n%s", s)
	}
}

func TestDemoRejectsTooFewEvents(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"demo", "--events", "5"}, nil, &out, &errOut); code != exitUsage {
		t.Fatalf("exit %d, want %d", code, exitUsage)
	}
}
