package postgres

import "testing"

func TestReplaceNul(t *testing.T) {
	for in, want := range map[string]string{
		`{"a":"x\u0000y"}`:         `{"a":"x\ufffdy"}`,
		`{"a":"\u0000\u0000"}`:     `{"a":"\ufffd\ufffd"}`,
		`{"a":"\\u0000"}`:          `{"a":"\\u0000"}`, // an escaped backslash, then text
		`{"a":"\\\u0000"}`:         `{"a":"\\\ufffd"}`,
		`{"a":"\u00001","b":"\n"}`: `{"a":"\ufffd1","b":"\n"}`,
	} {
		got := jsonDoc([]byte(in))
		if s, ok := got.([]byte); !ok || string(s) != want {
			t.Errorf("jsonDoc(%s) = %s, want %s", in, got, want)
		}
	}
	if jsonDoc(nil) != nil {
		t.Error("nil document is not NULL")
	}
}
