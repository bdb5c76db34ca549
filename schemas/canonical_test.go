package schemas

import (
	"errors"
	"testing"
)

func TestFingerprintKnownAnswers(t *testing.T) {
	cases := []struct {
		schema string
		want   uint64
	}{
		// From the Avro specification's test data (share/test/data/schema-tests.txt).
		{`"null"`, 7195948357588979594},
		{`{"type":"int"}`, 0x7275d51a3f395c8f},
		{`"string"`, 0x8f014872634503c7},
		// A logical type on a primitive reduces to the primitive.
		{`{"type":"long","logicalType":"timestamp-millis"}`, rabin([]byte(`"long"`))},
	}
	for _, c := range cases {
		got, err := Fingerprint(c.schema)
		if err != nil || got != c.want {
			t.Errorf("Fingerprint(%s) = %016x, %v; want %016x", c.schema, got, err, c.want)
		}
	}
	if _, err := Fingerprint(`{"type":"record"}`); !errors.Is(err, ErrBadSchema) {
		t.Errorf("bad schema: %v", err)
	}
}

func TestCanonicalForm(t *testing.T) {
	in := `{"type":"record","name":"R","namespace":"a.b","doc":"x","aliases":["Q"],"fields":[
		{"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"],"default":"X"},"default":"X","doc":"d"},
		{"name":"again","type":"E"},
		{"name":"f","type":{"type":"fixed","name":"c.F","size":16}},
		{"name":"m","type":{"type":"map","values":{"type":"array","items":["null","R"]}}},
		{"name":"t","type":{"type":"int","logicalType":"date"}}]}`
	want := `{"name":"a.b.R","type":"record","fields":[` +
		`{"name":"e","type":{"name":"a.b.E","type":"enum","symbols":["X","Y"]}},` +
		`{"name":"again","type":"a.b.E"},` +
		`{"name":"f","type":{"name":"c.F","type":"fixed","size":16}},` +
		`{"name":"m","type":{"type":"map","values":{"type":"array","items":["null","a.b.R"]}}},` +
		`{"name":"t","type":"int"}]}`
	n, err := parseSchema(in)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(canonicalForm(n)); got != want {
		t.Fatalf("canonical form\n got %s\nwant %s", got, want)
	}
}

func TestParseSchemaErrors(t *testing.T) {
	for _, s := range []string{
		`{"type":"record","name":"R","fields":[{"name":"a","type":"Nope"}]}`,
		`{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"a","type":"int"}]}`,
		`{"type":"enum","name":"E","symbols":["A","A"]}`,
		`{"type":"enum","name":"E","symbols":["A"],"default":"B"}`,
		`{"type":"fixed","name":"F"}`,
		`["int","int"]`,
		`[["int"]]`,
		`{"type":"record","name":"1R","fields":[]}`,
		`{"type":"array"}`,
		`"int" "long"`,
	} {
		if _, err := parseSchema(s); !errors.Is(err, ErrBadSchema) {
			t.Errorf("parseSchema(%s) = %v, want ErrBadSchema", s, err)
		}
	}
}
