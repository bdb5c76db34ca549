// Package sink is the sink runtime: it drains one region's pinned topic into
// one store, and only into a store the ruleset in force approves for that
// region.
//
// A Sink fetches events from the pinned topic (a stream.Subscriber), reads
// each one the way its residency-schema header says the router read it
// (framing and writer schema: one pinned topic may hold every framing), and
// writes them in batches through a Store. Offsets are committed only after
// the store has durably accepted the batch, so a crash at any point loses
// nothing: the uncommitted events are fetched again. Stores are idempotent
// on the event id (or, for the object store, on the pinned-topic offsets it
// already holds), so redelivery never stores an event twice.
//
// Approval is enforced three times:
//
//  1. At start, Run refuses to run (ErrNotApproved, naming store, region and
//     ruleset version) unless the ruleset approves the store for the
//     configured region and that region's pinned topic is the consumed one.
//  2. Per event, the sink believes no header it can check: it re-decides
//     the event's placement from its own fields (country, user id and the
//     user's pin) under the ruleset version that placed it, with
//     router.Decide, and refuses it unless that gives the jurisdiction,
//     region and decided-by its headers claim (CheckContent). Then, under
//     the ruleset in force at write time, the store must be approved for
//     the event's region and the event must still belong to that region
//     (an event routed under an older ruleset that moved its jurisdiction
//     to another region is not written where it waits). A refused event
//     goes to the sink's quarantine topic with its reason and what exactly
//     was wrong in its headers, and is not written.
//  3. Before every batch the check of (1) is repeated against the ruleset in
//     force; when a new ruleset revokes the approval (or no valid ruleset is
//     available) the sink stops writing, keeps the batch uncommitted, reports
//     not-ready, and resumes only once the approval is back.
package sink

import (
	"context"
	"time"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
)

// Record is one event as a store receives it: the residency metadata from
// the event's headers, the fields every store indexes, the decoded event and
// the original bytes.
type Record struct {
	// EventID is the event's event_id, the store's idempotency key.
	EventID string
	// UserID is the event's user_id.
	UserID string
	// Jurisdiction is the residency-jurisdiction header; always the
	// jurisdiction the event's own fields give under the ruleset version
	// that placed it.
	Jurisdiction string
	// Region is the residency-region header; always a region the store is
	// approved for, and the event's region under the ruleset in force.
	Region string
	// OccurredAt is the event's occurred_at, in UTC.
	OccurredAt time.Time
	// RulesetVersion is the residency-ruleset-version header: the version of
	// the ruleset that placed the event ("" if absent).
	RulesetVersion string
	// SourceTopic is the ingest topic the router read the event from (the
	// residency-source-topic header, "" if absent).
	SourceTopic string
	// SourcePartition is its ingest partition (-1 if absent).
	SourcePartition int32
	// SourceOffset is its ingest offset (-1 if absent).
	SourceOffset int64
	// Topic is the pinned topic the sink read the event from.
	Topic string
	// Partition is its partition in the pinned topic.
	Partition int
	// Offset is its offset in that partition.
	Offset int64
	// Time is the pinned-topic record's timestamp (UTC).
	Time time.Time
	// Event is the decoded event as a JSON document.
	Event []byte
	// Raw is the record value exactly as read (framing included).
	Raw []byte
}

// Store is where a sink writes: a store in the ruleset's sense, a sink's
// destination. Implementations: connectors/postgres and
// connectors/objectstore; every implementation passes the conformance suite
// sink/storetest.TestStore.
type Store interface {
	// Write stores batch durably: when it returns nil, every record survives
	// a crash of the sink and of the store's client. Write is idempotent:
	// writing a record again (the same event id, or the same batch again
	// after a crash) never creates a second copy, except where the store's
	// documentation says otherwise (the object store, for two group members
	// writing the same offsets at the same moment); it never removes a
	// record written before. On error, any subset of the batch may have been
	// written; the sink retries the whole batch. ctx carries the sink's
	// WriteTimeout: Write must give up when it ends.
	Write(ctx context.Context, batch []Record) error
	// Close releases the store's resources, waiting for them until ctx ends.
	Close(ctx context.Context) error
}

// RulesSource hands out the ruleset in force. rules.Cache satisfies it.
type RulesSource interface {
	// Current returns the ruleset in force, or an error when there is no
	// valid one; the sink then stops writing (fail closed).
	Current() (*rules.Ruleset, error)
}

// Decoder reads an event value the way its residency-schema header says
// (framing and writer schema, a schemas.WriterRef), whatever the framing of
// the topic it was read from. schemas.Extractor satisfies it. Errors
// wrapping schemas.ErrRegistryUnavailable are transient and retried;
// schemas.ErrUnknownSchema quarantines the event as sink_unknown_schema,
// any other error as sink_undecodable.
type Decoder interface {
	// DecodeRef fully decodes value, written as ref says, into goavro's
	// native form and returns the writer schema.
	DecodeRef(ctx context.Context, ref schemas.WriterRef, value []byte) (native any, writerSchema string, err error)
	// ExtractRef reads the fields a placement is decided on (country and
	// user id) from value, written as ref says.
	ExtractRef(ctx context.Context, ref schemas.WriterRef, value []byte) (schemas.Fields, error)
}
