package schemas

import (
	"context"
	"errors"
	"testing"
)

// A sink reads by the residency-schema header of each record, whatever its
// own topics' framings: a "confluent:N" header reaching an extractor without
// a schema registry is an unknown schema, not a panic.
func TestConfluentRefWithoutRegistryIsUnknownSchema(t *testing.T) {
	e, err := NewExtractor(ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ref := WriterRef{Framing: FramingConfluent, ID: 42}
	value := AppendConfluent(nil, 42, []byte{2, 'a'})
	ctx := context.Background()
	if _, err := e.ExtractRef(ctx, ref, value); !errors.Is(err, ErrUnknownSchema) {
		t.Errorf("ExtractRef = %v, want ErrUnknownSchema", err)
	}
	if _, _, err := e.DecodeRef(ctx, ref, value); !errors.Is(err, ErrUnknownSchema) {
		t.Errorf("DecodeRef = %v, want ErrUnknownSchema", err)
	}
	if _, _, err := e.DecodeJSONFastRef(ctx, ref, value); !errors.Is(err, ErrUnknownSchema) {
		t.Errorf("DecodeJSONFastRef = %v, want ErrUnknownSchema", err)
	}
}
