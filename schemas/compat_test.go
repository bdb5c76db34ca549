package schemas

import (
	"errors"
	"strings"
	"testing"
)

func rec(fields string) string {
	return `{"type":"record","name":"UserEvent","namespace":"io.residency.events","fields":[` + fields + `]}`
}

func TestCheckRoutable(t *testing.T) {
	cases := []struct {
		name, schema, country, user string
		countryOK, userOK           bool
		want                        string // in the country problem
	}{
		{"canonical", UserEventSchema, "", "", true, true, ""},
		{"plain string", rec(`{"name":"user_id","type":"string"},{"name":"country","type":"string"}`), "", "", true, true, ""},
		{"enum", rec(`{"name":"user_id","type":"string"},{"name":"country","type":["null",{"type":"enum","name":"C","symbols":["US"]}]}`), "", "", true, true, ""},
		{"missing country", rec(`{"name":"user_id","type":"string"}`), "", "", false, true, "quarantine"},
		{"int country", rec(`{"name":"user_id","type":"string"},{"name":"country","type":"int"}`), "", "", false, true, "it is a int"},
		{"missing user", rec(`{"name":"country","type":"string"}`), "", "", true, false, ""},
		{"nested", rec(`{"name":"user_id","type":"string"},{"name":"geo","type":["null",{"type":"record","name":"G","fields":[{"name":"cc","type":["null","string"]}]}]}`), "geo.cc", "", true, true, ""},
		{"union of records", rec(`{"name":"user_id","type":"string"},{"name":"geo","type":["null",{"type":"record","name":"A","fields":[]},{"type":"record","name":"B","fields":[{"name":"cc","type":"string"}]}]}`), "geo.cc", "", true, true, ""},
		{"through a string", rec(`{"name":"user_id","type":"string"},{"name":"geo","type":"string"}`), "geo.cc", "", false, true, "not a record"},
	}
	for _, c := range cases {
		got, err := CheckRoutable(c.schema, c.country, c.user)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got.Country.OK != c.countryOK || got.UserID.OK != c.userOK || got.Routable() != (c.countryOK && c.userOK) {
			t.Errorf("%s: %+v", c.name, got)
		}
		if !strings.Contains(got.Country.Problem, c.want) {
			t.Errorf("%s: country problem %q, want it to mention %q", c.name, got.Country.Problem, c.want)
		}
	}
	if _, err := CheckRoutable(`{"type":`, "", ""); !errors.Is(err, ErrBadSchema) {
		t.Errorf("bad schema: %v", err)
	}
}

func TestCheckBackward(t *testing.T) {
	base := `{"name":"user_id","type":"string"},{"name":"country","type":["null","string"],"default":null},{"name":"n","type":"int"}`
	cases := []struct {
		name, reader, writer string
		want                 []string // substrings of findings; none = compatible
	}{
		{"same", rec(base), rec(base), nil},
		{"canonical with itself", UserEventSchema, UserEventSchema, nil},
		{"added field with default", rec(base + `,{"name":"x","type":["null","string"],"default":null}`), rec(base), nil},
		{"added field without default", rec(base + `,{"name":"x","type":"string"}`), rec(base), []string{"x: this field is new and has no default"}},
		{"removed field", rec(`{"name":"user_id","type":"string"}`), rec(base), nil},
		{"promotion int to long", rec(`{"name":"user_id","type":"string"},{"name":"country","type":["null","string"],"default":null},{"name":"n","type":"long"}`), rec(base), nil},
		{"narrowing long to int", rec(base), rec(`{"name":"user_id","type":"string"},{"name":"n","type":"long"}`), []string{"n: the type changed from long to int"}},
		{"country no longer nullable", rec(`{"name":"user_id","type":"string"},{"name":"country","type":"string"},{"name":"n","type":"int"}`), rec(base), []string{"country: the previous schema allowed null"}},
		{"renamed with alias", rec(`{"name":"uid","type":"string","aliases":["user_id"]},{"name":"n","type":"int"}`), rec(base), nil},
		{"enum symbol removed", rec(`{"name":"e","type":{"type":"enum","name":"E","symbols":["A"]}}`), rec(`{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}`), []string{"no longer has the symbol B"}},
		{"enum symbol removed with default", rec(`{"name":"e","type":{"type":"enum","name":"E","symbols":["A","Z"],"default":"Z"}}`), rec(`{"name":"e","type":{"type":"enum","name":"E","symbols":["A","B"]}}`), nil},
		{"fixed size", rec(`{"name":"h","type":{"type":"fixed","name":"H","size":16}}`), rec(`{"name":"h","type":{"type":"fixed","name":"H","size":32}}`), []string{"changed size from 32 to 16"}},
		{"record renamed", `{"type":"record","name":"Other","fields":[]}`, rec(base), []string{"the type changed"}},
		{"nested in array and map", rec(`{"name":"a","type":{"type":"array","items":{"type":"map","values":"int"}}}`), rec(`{"name":"a","type":{"type":"array","items":{"type":"map","values":"string"}}}`), []string{"a[]{}: the type changed from string to int"}},
		{"recursive", rec(`{"name":"next","type":["null","UserEvent"]}`), rec(`{"name":"next","type":["null","UserEvent"]}`), nil},
	}
	for _, c := range cases {
		got, err := CheckBackward(c.reader, c.writer)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: findings %v, want %d", c.name, got, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.Contains(got[i].String(), w) {
				t.Errorf("%s: finding %q, want it to contain %q", c.name, got[i], w)
			}
		}
	}
	if _, err := CheckBackward(UserEventSchema, "nope"); !errors.Is(err, ErrBadSchema) || !strings.HasPrefix(err.Error(), "previous schema") {
		t.Errorf("bad previous schema: %v", err)
	}
}
