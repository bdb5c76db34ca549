package stream

import "context"

// Subscriber reads records from topics (the router: the ingest topics; a
// sink: one pinned topic) as a member of a consumer group. Fetch does not
// commit; Commit marks the given records (and every earlier record of their
// partitions) as processed.
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
// whenever it returns, satisfies the contract. streamtest.TestPubSub checks
// the first half: records read back are the ones given, even though the
// caller overwrote everything it passed once Publish returned nil.
type Publisher interface {
	// Publish writes msgs to their topics (Message.Topic). See the memory
	// contract above: after returning nil it keeps no reference to msgs
	// or to their keys, values, headers and header values.
	Publish(ctx context.Context, msgs ...Message) error
	// Close releases the publisher's resources. Publish returns only once
	// its records are acknowledged, so nothing is left to send: Close does
	// not flush. Publish after Close may fail.
	Close() error
}

// PlacingPublisher is a Publisher that also says where it wrote each
// record (connectors/kafka.Writer): replay records the destination
// partition and offset of every event it writes in its audit leaves. The
// memory contract of Publish holds.
type PlacingPublisher interface {
	Publisher
	// PublishPlaced is Publish that, when it returns nil, has set parts[i]
	// and offs[i] to the partition and offset msgs[i] was written at (-1
	// when the cluster did not say). parts and offs have len(msgs).
	PublishPlaced(ctx context.Context, parts []int32, offs []int64, msgs ...Message) error
}

// GroupMember is implemented by subscribers that can tell whether they have
// joined their consumer group. The router reports not-ready until they have.
type GroupMember interface {
	// Joined reports whether the subscriber currently holds a group
	// assignment.
	Joined() bool
}
