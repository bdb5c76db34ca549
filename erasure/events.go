package erasure

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Extractor reads the placement fields of an encoded event, by the framing
// of its topic or by a writer reference. *schemas.Extractor satisfies it.
type Extractor interface {
	// Extract reads value as topic's events are framed.
	Extract(ctx context.Context, topic string, value []byte) (schemas.Fields, error)
	// ExtractRef reads value written as ref says.
	ExtractRef(ctx context.Context, ref schemas.WriterRef, value []byte) (schemas.Fields, error)
}

// NewEventReader returns the EventReader that reads records as the router
// and the sinks do: an ingest topic's records by the topic's framing
// (their residency-* headers are the producers' and are ignored, as the
// router ignores them), every other topic's records by their
// residency-schema header when it names a writer schema (pinned topics may
// mix framings), else by the topic's framing.
func NewEventReader(x Extractor) EventReader { return eventReader{x} }

type eventReader struct{ x Extractor }

func (r eventReader) Fields(ctx context.Context, t Topic, m *stream.Message) (schemas.Fields, error) {
	if t.Role != RoleIngest {
		for _, h := range m.Headers {
			if h.Key != router.HeaderSchema {
				continue
			}
			if ref, err := schemas.ParseWriterRef(string(h.Value)); err == nil && !ref.IsZero() {
				return r.x.ExtractRef(ctx, ref, m.Value)
			}
		}
	}
	return r.x.Extract(ctx, m.Topic, m.Value)
}

// transient reports whether err is worth waiting for rather than counting
// the record as unreadable.
func transient(err error) bool {
	return errors.Is(err, schemas.ErrRegistryUnavailable) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// errNotString: a field of a stored event's JSON is not a string.
var errNotString = errors.New("not a string")

// jsonField returns the string at the dotted path of a JSON document (as
// the sinks store events: unions unwrapped), and whether it is present and
// not null.
func jsonField(doc []byte, path string) (string, bool, error) {
	if len(doc) == 0 {
		return "", false, errors.New("no event document")
	}
	var v any
	d := json.NewDecoder(bytes.NewReader(doc))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return "", false, fmt.Errorf("event document: %w", err)
	}
	for _, name := range strings.Split(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return "", false, nil
		}
		if v, ok = obj[name]; !ok {
			return "", false, nil
		}
	}
	switch s := v.(type) {
	case nil:
		return "", false, nil
	case string:
		return s, true, nil
	default:
		return "", false, fmt.Errorf("%s: %w", path, errNotString)
	}
}
