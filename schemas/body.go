package schemas

import "context"

// Body checks an event value from topic, removes its framing and returns the
// Avro binary body with the schema it was written with, for consumers that
// decode it themselves (DecodeJSONFast does so in this package). body
// aliases value. Errors
// are those of Decode.
func (e *Extractor) Body(ctx context.Context, topic string, value []byte) (body []byte, writerSchema string, err error) {
	w, body, err := e.writerFor(ctx, topic, value, new(WriterRef))
	if err != nil {
		return nil, "", err
	}
	return body, w.text, nil
}
