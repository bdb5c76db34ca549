package schemas

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/linkedin/goavro/v2"
)

// TestEncodeJSON: an event given as Avro JSON or as plain JSON encodes to
// the same body, which the extractor reads; JSON that does not fit says so.
func TestEncodeJSON(t *testing.T) {
	plain := `{"event_id": "e-1", "user_id": "u-1", "occurred_at": 1790000000000, "event_type": "LOGIN",
		"session_id": null, "device": {"device_id": "d", "os": "IOS", "app_version": "1"}, "country": "DE"}`
	body, err := EncodeJSON(UserEventSchema, []byte(plain))
	if err != nil {
		t.Fatal(err)
	}
	codec, err := goavro.NewCodec(UserEventSchema)
	if err != nil {
		t.Fatal(err)
	}
	native, _, err := codec.NativeFromBinary(body)
	if err != nil {
		t.Fatal(err)
	}
	avroJSON, err := codec.TextualFromNative(nil, native)
	if err != nil {
		t.Fatal(err)
	}
	again, err := EncodeJSON(UserEventSchema, avroJSON)
	if err != nil || !bytes.Equal(again, body) {
		t.Fatalf("Avro JSON encodes to %x, %v; want %x", again, err, body)
	}
	fp, _ := Fingerprint(UserEventSchema)
	x, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := x.Extract(context.Background(), "t", AppendSingleObject(nil, fp, body))
	if err != nil || string(f.Country) != "DE" || string(f.UserID) != "u-1" {
		t.Fatalf("fields %+v, %v", f, err)
	}
	if _, err := EncodeJSON(UserEventSchema, []byte(`{"event_id": 7}`)); err == nil || !strings.Contains(err.Error(), "plain JSON") {
		t.Fatalf("a JSON that does not fit: %v", err)
	}
}

// TestFieldsFromJSON: the routing fields alone, at nested paths, as
// strings, Avro JSON unions or null.
func TestFieldsFromJSON(t *testing.T) {
	f, err := FieldsFromJSON([]byte(`{"geo": {"country": {"string": "US"}}, "user_id": "u"}`), "geo.country", "user_id")
	if err != nil || !f.HasCountry || string(f.Country) != "US" || string(f.UserID) != "u" {
		t.Fatalf("fields %+v, %v", f, err)
	}
	if f, err := FieldsFromJSON([]byte(`{"country": null, "user_id": "u"}`), "country", "user_id"); err != nil || f.HasCountry {
		t.Fatalf("null country: %+v, %v", f, err)
	}
	for _, bad := range []string{`[1]`, `{"other": 1}`, `{"country": 7}`, `not json`} {
		if _, err := FieldsFromJSON([]byte(bad), "country", "user_id"); err == nil {
			t.Errorf("FieldsFromJSON(%s) = nil error", bad)
		}
	}
	if !OnlyRoutingFields([]byte(`{"country": "US"}`), "country", "user_id") || OnlyRoutingFields([]byte(`{"country": "US", "x": 1}`), "country", "user_id") {
		t.Error("OnlyRoutingFields")
	}
}
