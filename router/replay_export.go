package router

import (
	"context"
	"fmt"

	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Replay provenance headers, added by replay (router/replay) to every event
// it writes, after the residency headers. The residency-source-* headers of
// a replayed event keep naming the ingest coordinates the event was first
// read from.
const (
	// HeaderReplayID is the id of the replay that wrote the event.
	HeaderReplayID = "residency-replay-id"
	// HeaderReplayCount is how many times the event has been replayed,
	// this replay included.
	HeaderReplayCount = "residency-replay-count"
	// HeaderReplayTopic is the topic the replay read the event from (the
	// ingest, quarantine or dead-letter topic).
	HeaderReplayTopic = "residency-replay-topic"
	// HeaderReplayPartition is the partition the replay read it from.
	HeaderReplayPartition = "residency-replay-partition"
	// HeaderReplayOffset is the offset the replay read it from.
	HeaderReplayOffset = "residency-replay-offset"
)

// ResidencyHeaders returns the headers the router writes with an event: the
// original headers of m minus residency ones, followed by the residency
// headers for decision d (the source coordinates are m's Topic, Partition
// and Offset). writer is how the event was read (schemas.Fields.Writer,
// also on error), for the residency-schema header. decodeErr is the decode
// error of a dead-lettered event, or nil. Replay uses it so replayed events
// carry exactly the router's headers.
func ResidencyHeaders(m *stream.Message, d *Decision, writer schemas.WriterRef, rulesetVersion, instance string, decodeErr error) []stream.Header {
	return outHeaders(m, d, writer, rulesetVersion, instance, decodeErr)
}

// ReadFields reads the jurisdiction inputs of m as the router does: an empty
// value fails with schemas.ErrEmptyValue, an event whose key, value and
// headers add up to more than maxValueBytes with schemas.ErrTooLarge, anything else is fr.Extract's result. An error
// wrapping schemas.ErrRegistryUnavailable is transient; any other error
// dead-letters the event (see DeadLetter).
func ReadFields(ctx context.Context, fr FieldReader, m *stream.Message, maxValueBytes int) (schemas.Fields, error) {
	if len(m.Value) == 0 {
		return schemas.Fields{}, fmt.Errorf("router: %w", schemas.ErrEmptyValue)
	}
	if err := checkSize(m, maxValueBytes); err != nil {
		return schemas.Fields{}, err
	}
	return fr.Extract(ctx, m.Topic, m.Value)
}
