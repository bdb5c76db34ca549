package router

import (
	"context"
	"time"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// Header is one Kafka record header.
type Header struct {
	// Key is the header name.
	Key string
	// Value is the header value, as raw bytes.
	Value []byte
}

// Message is one Kafka record as the router sees it, independent of the
// client library.
type Message struct {
	// Topic is the topic the record was read from, or is to be written to.
	Topic string
	// Partition is the partition it was read from; ignored when publishing
	// (the publisher picks the partition from the key).
	Partition int
	// Offset is its offset in the partition; ignored when publishing.
	Offset int64
	// HighWaterMark is the partition's high-water mark when the record was
	// fetched (0 if unknown); used for the consumer-lag gauge.
	HighWaterMark int64
	// Key is the record key.
	Key []byte
	// Value is the record value (the encoded event).
	Value []byte
	// Headers are the record headers, in order.
	Headers []Header
	// Time is the record timestamp (when it was produced).
	Time time.Time
}

// Subscriber reads records from the ingest topics as a member of a consumer
// group. Fetch does not commit; Commit marks the given records (and every
// earlier record of their partitions) as processed.
type Subscriber interface {
	// Fetch blocks until a record is available or ctx is done. A record not
	// returned because ctx ended is not lost: a later Fetch returns it.
	Fetch(ctx context.Context) (Message, error)
	// Commit commits the offsets of msgs for the group.
	Commit(ctx context.Context, msgs ...Message) error
}

// Publisher writes records to topics of one Kafka cluster. Publish returns
// only when every record has been acknowledged by all in-sync replicas, or
// with an error (in which case any subset may have been written). Records
// with equal keys go to the same partition of a topic, in the order given.
//
// Memory contract. The messages given to Publish are borrowed: the msgs
// slice, and every message's Key, Value, Headers slice and header Values.
// The caller does not change them while Publish runs. Publish only reads
// them, never changes them, and:
//
//   - once it has returned nil, keeps no reference to any of them, and
//     nothing it started reads them any more. The caller may then overwrite
//     or reuse all of that memory; the router builds each batch's headers
//     in the memory of the previous batch's.
//   - once it has returned an error, may still read them, for an unbounded
//     time (a Kafka client may still be encoding a produce request after
//     its context ended, as kafka-go's Writer does). The caller must not
//     change or reuse them after that, even if a later call with the same
//     messages (a retry) returns nil; it may pass them to Publish again.
//
// An adapter that copies what it keeps, or that is done with the messages
// whenever it returns, satisfies the contract. routertest.TestPubSub checks
// the first half: records read back are the ones given, even though the
// caller overwrote everything it passed once Publish returned nil.
type Publisher interface {
	// Publish writes msgs to their topics (Message.Topic). See the memory
	// contract above: after returning nil it keeps no reference to msgs
	// or to their keys, values, headers and header values.
	Publish(ctx context.Context, msgs ...Message) error
	// Close flushes and releases the publisher's resources.
	Close() error
}

// GroupMember is implemented by subscribers that can tell whether they have
// joined their consumer group. The router reports not-ready until they have.
type GroupMember interface {
	// Joined reports whether the subscriber currently holds a group
	// assignment.
	Joined() bool
}

// FieldReader reads the jurisdiction inputs of an event from its encoded
// value without decoding the whole record. schemas.Extractor satisfies it.
// Errors wrap the schemas sentinel errors; schemas.ErrRegistryUnavailable is
// transient and is retried, every other error dead-letters the event.
type FieldReader interface {
	// Extract reads the fields of value, read from topic.
	Extract(ctx context.Context, topic string, value []byte) (schemas.Fields, error)
}

// RulesSource hands out the ruleset in force. rules.Cache satisfies it.
type RulesSource interface {
	// Current returns the ruleset in force, or an error when there is no
	// valid one (none loaded, stale, corrupt); the router then stops
	// consuming until it returns one again.
	Current() (*rules.Ruleset, error)
}

// PinLookup returns per-user jurisdiction overrides. rules.Pins satisfies it.
type PinLookup interface {
	// Lookup returns, for each user id, the name of the jurisdiction the
	// user is pinned to, or "" if the user has no pin. The result has the
	// same length as userIDs.
	Lookup(ctx context.Context, userIDs [][]byte) ([]string, error)
}
