package sink

import (
	"context"
	"testing"

	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/sink/sinktest"
)

// Both decoding paths of the sink (the transcoder and goavro's native form)
// read the key fields every store indexes.
func TestDecodeReadsKeyFields(t *testing.T) {
	e, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		t.Fatal(err)
	}
	v := sinktest.Event(3, "DE")
	native, schema, err := e.Decode(context.Background(), "t", v)
	if err != nil {
		t.Fatal(err)
	}
	var it item
	if err := it.fill(native, schema); err != nil {
		t.Fatal(err)
	}
	if it.eventID != sinktest.EventID(3) || it.userID != sinktest.UserID(3) || !it.occurredAt.Equal(sinktest.OccurredAt(3)) {
		t.Errorf("key fields = %q %q %v", it.eventID, it.userID, it.occurredAt)
	}
	_, kf, err := e.DecodeJSONFast(context.Background(), "t", v)
	if err != nil {
		t.Fatal(err)
	}
	if kf.EventID != sinktest.EventID(3) || kf.UserID != sinktest.UserID(3) || !kf.OccurredAt.Equal(sinktest.OccurredAt(3)) {
		t.Errorf("transcoded key fields = %+v", kf)
	}
}
