package schemas

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
)

// golden is testdata/golden/golden.json, written by fastavro (gen.py).
type golden struct {
	Generator string `json:"generator"`
	Schemas   map[string]struct {
		RegistryID  uint32 `json:"registry_id"`
		Fingerprint string `json:"fingerprint"`
		Schema      string `json:"schema"`
	} `json:"schemas"`
	Cases []struct {
		Name         string  `json:"name"`
		Writer       string  `json:"writer"`
		Body         string  `json:"body"`
		Confluent    string  `json:"confluent"`
		SingleObject string  `json:"single_object"`
		Country      *string `json:"country"`
		UserID       string  `json:"user_id"`
		JSON         any     `json:"json"`
	} `json:"cases"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGolden decodes and extracts values encoded by fastavro, in all three
// framings, with older, current and newer writer schemas.
func TestGolden(t *testing.T) {
	raw, err := os.ReadFile("testdata/golden/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g golden
	if err := json.Unmarshal(raw, &g); err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) < 8 || len(g.Schemas) != 3 {
		t.Fatalf("golden.json has %d cases, %d schemas", len(g.Cases), len(g.Schemas))
	}
	if g.Schemas["v3"].Schema != UserEventSchema {
		t.Fatal("golden.json is stale: rerun schemas/testdata/golden/gen.py")
	}

	reg := newFakeRegistry(t)
	dir := t.TempDir()
	cfg := ExtractorConfig{
		Framings:     map[string]Framing{},
		RawSchemas:   map[string]string{},
		Registry:     RegistryConfig{URL: reg.URL},
		CatalogueDir: dir,
	}
	for name, s := range g.Schemas {
		want, err := strconv.ParseUint(s.Fingerprint, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := Fingerprint(s.Schema); err != nil || got != want {
			t.Fatalf("%s: Fingerprint = %016x, %v; fastavro says %016x", name, got, err, want)
		}
		reg.ids[s.RegistryID] = s.Schema
		p := filepath.Join(dir, name+".avsc")
		if err := os.WriteFile(p, []byte(s.Schema), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.Framings["confluent-"+name] = FramingConfluent
		cfg.Framings["so-"+name] = FramingSingleObject
		cfg.Framings["raw-"+name] = FramingRaw
		cfg.RawSchemas["raw-"+name] = p
	}
	e, err := NewExtractor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) {
			body := unhex(t, c.Body)
			s := g.Schemas[c.Writer]
			values := map[string][]byte{
				"confluent-" + c.Writer: unhex(t, c.Confluent),
				"so-" + c.Writer:        unhex(t, c.SingleObject),
				"raw-" + c.Writer:       body,
			}
			if got := AppendConfluent(nil, s.RegistryID, body); !bytes.Equal(got, values["confluent-"+c.Writer]) {
				t.Errorf("AppendConfluent differs from gen.py's framing")
			}
			fp, _ := strconv.ParseUint(s.Fingerprint, 16, 64)
			if got := AppendSingleObject(nil, fp, body); !bytes.Equal(got, values["so-"+c.Writer]) {
				t.Errorf("AppendSingleObject differs from gen.py's framing")
			}
			wantJSON, _ := json.Marshal(c.JSON)
			var want any
			_ = json.Unmarshal(wantJSON, &want)
			for topic, v := range values {
				f, err := e.Extract(ctx, topic, v)
				if err != nil {
					t.Fatalf("%s: Extract: %v", topic, err)
				}
				if (c.Country == nil) == f.HasCountry || (c.Country != nil && string(f.Country) != *c.Country) {
					t.Errorf("%s: country %q (HasCountry %v), want %v", topic, f.Country, f.HasCountry, c.Country)
				}
				if string(f.UserID) != c.UserID {
					t.Errorf("%s: user id %q, want %q", topic, f.UserID, c.UserID)
				}
				doc, schema, err := e.DecodeJSON(ctx, topic, v)
				if err != nil {
					t.Fatalf("%s: DecodeJSON: %v", topic, err)
				}
				if schema != s.Schema {
					t.Errorf("%s: wrong writer schema", topic)
				}
				var got any
				if err := json.Unmarshal(doc, &got); err != nil {
					t.Fatalf("%s: DecodeJSON is not JSON: %v", topic, err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s: DecodeJSON\n got %s\nwant %s", topic, doc, wantJSON)
				}
				if _, _, err := e.Decode(ctx, topic, v); err != nil {
					t.Errorf("%s: Decode: %v", topic, err)
				}
			}
		})
	}
}
