package erasure

import (
	"context"
	"errors"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// Sentinel errors callers branch on.
var (
	// ErrConfig marks an invalid configuration or argument; the message
	// names it (a command exits 2).
	ErrConfig = errors.New("erasure: bad config")
	// ErrEmptyUser: an erasure or a listing was asked for an empty user id.
	ErrEmptyUser = errors.New("erasure: empty user id")
	// ErrUnknownStore: a store name that the config does not know.
	ErrUnknownStore = errors.New("erasure: unknown store")
	// ErrUnknownJurisdiction: a jurisdiction the ruleset in force does not
	// have.
	ErrUnknownJurisdiction = errors.New("erasure: unknown jurisdiction")
	// ErrLocked: another erasure holds the lock.
	ErrLocked = errors.New("erasure: another erasure is running")
	// ErrIncomplete: an erasure or a purge did not finish everywhere; its
	// receipt or result says where, and running it again finishes it.
	ErrIncomplete = errors.New("erasure: incomplete")
)

// Role is what a topic is for.
type Role string

// Topic roles.
const (
	// RoleIngest: an ingest topic (producers write it; the router reads it).
	RoleIngest Role = "ingest"
	// RoleQuarantine: the router's quarantine topic.
	RoleQuarantine Role = "quarantine"
	// RoleDeadLetter: the router's dead-letter topic.
	RoleDeadLetter Role = "dead-letter"
	// RoleSinkQuarantine: a sinks' quarantine topic.
	RoleSinkQuarantine Role = "sink-quarantine"
	// RoleHold: a topic holding events while their region is unavailable.
	RoleHold Role = "hold"
	// RolePinned: a region's pinned topic.
	RolePinned Role = "pinned"
)

// Topic is one topic the config knows, on one cluster.
type Topic struct {
	// Cluster is the Kafka cluster's name (kafka.clusters).
	Cluster string `json:"cluster"`
	// Name is the topic.
	Name string `json:"topic"`
	// Role is what the topic is for.
	Role Role `json:"role"`
	// Region is, for a pinned topic, its region.
	Region string `json:"region,omitempty"`
}

// String returns CLUSTER/TOPIC.
func (t Topic) String() string { return t.Cluster + "/" + t.Name }

// Admin is what this package asks of a Kafka cluster.
// connectors/kafka.Admin satisfies it.
type Admin interface {
	// Watermarks returns, per partition of topic, its log start offset and
	// its high-water mark.
	Watermarks(ctx context.Context, topic string) (low, high map[int]int64, err error)
	// CommittedOffsets returns the offsets group committed on the
	// partitions of topic; a partition never committed is absent.
	CommittedOffsets(ctx context.Context, group, topic string) (map[int]int64, error)
	// OffsetsAt returns, per partition of topic, the first offset whose
	// timestamp is at or after t, or the high-water mark when none is.
	OffsetsAt(ctx context.Context, topic string, t time.Time) (map[int]int64, error)
	// DeleteRecords makes before[p] the log start offset of each partition
	// p of topic and returns the log start offsets afterwards.
	DeleteRecords(ctx context.Context, topic string, before map[int]int64) (map[int]int64, error)
	// TopicConfig returns the topic's effective configuration
	// (retention.ms, cleanup.policy, segment.ms, max.compaction.lag.ms, …).
	TopicConfig(ctx context.Context, topic string) (map[string]string, error)
}

// TopicReader reads offset ranges of a partition without a consumer group.
// connectors/kafka.RangeReader satisfies it.
type TopicReader interface {
	// ReadRange reads the records of topic/partition with offsets in
	// [start, end) in offset order and calls fn with batches of at most
	// batch records, returning fn's first error. Offsets the broker no
	// longer holds are passed over.
	ReadRange(ctx context.Context, topic string, partition int, start, end int64, batch int, fn func([]stream.Message) error) error
}

// Cluster is one Kafka cluster: how to administer it and read it.
type Cluster struct {
	// Admin answers offsets, deletes records and describes topics.
	Admin Admin
	// Reader reads offset ranges.
	Reader TopicReader
}

// Row is one stored event, as Store.Scan hands it over: where it came
// from, what the store recorded of its placement, and what placement is
// decided on again.
type Row struct {
	// EventID is the event's id (the row's key).
	EventID string
	// UserID is the event's user id.
	UserID string
	// Jurisdiction and Region are what the store recorded (from the
	// residency headers); they are reported, not believed.
	Jurisdiction, Region string
	// RulesetVersion is the version of the ruleset that placed the event.
	RulesetVersion string
	// SourceTopic, SourcePartition and SourceOffset are the ingest
	// coordinates the router read the event from (-1 when unknown).
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	// Topic, Partition and Offset are the pinned-topic coordinates the sink
	// read it from.
	Topic     string
	Partition int
	Offset    int64
	// OccurredAt is the event's occurred_at.
	OccurredAt time.Time
	// Event is the decoded event as a JSON document (unions unwrapped), from
	// which the country is read again.
	Event []byte
	// Object is, for an object store, the object holding the row.
	Object string
}

// Store is a sink's store, as erasure and the residue scan see it.
// connectors/postgres.Store and connectors/objectstore.Store satisfy it.
type Store interface {
	// Erase removes every row of userID and returns how many it removed.
	// It removes nothing else: other users' rows stay, byte for byte. It is
	// atomic per unit of storage (a transaction, an object): interrupted,
	// it leaves each unit either as it was or without the user's rows.
	Erase(ctx context.Context, userID string) (removed int, err error)
	// Count returns how many rows of userID the store holds; it changes
	// nothing.
	Count(ctx context.Context, userID string) (int, error)
	// Scan calls fn with every row, stopping at fn's first error.
	Scan(ctx context.Context, fn func(Row) error) error
}

// RowStore is a Store that also finds and removes given events, for the
// residue clean-up (ResidueScanner.Clean). connectors/postgres.Store and
// connectors/objectstore.Store satisfy it.
type RowStore interface {
	Store
	// HasEvents returns which of eventIDs the store holds.
	HasEvents(ctx context.Context, eventIDs []string) (map[string]bool, error)
	// EraseEvents removes the rows of eventIDs, atomically per unit of
	// storage as Erase, and returns how many it removed.
	EraseEvents(ctx context.Context, eventIDs []string) (removed int, err error)
}

// StoreRef is one store of the config.
type StoreRef struct {
	// Name is the store's name (stores[].name in the ruleset, sinks[].store
	// in the config).
	Name string `json:"store"`
	// Region is the region its sink drains.
	Region string `json:"region"`
	// Store is the store.
	Store Store `json:"-"`
}

// Subjects turns a user id into its keyed hash. *audit.Pseudonymizer
// satisfies it.
type Subjects interface {
	// Subject returns the keyed hash of userID.
	Subject(userID []byte) audit.Digest
}

// Markers keeps the erasure markers: for each erased user (as its keyed
// hash), when the erasure was recorded. Sinks check them before writing
// (see Guard), so that a redelivery or a replay never stores an erased
// user again. connectors/redis.Markers satisfies it.
type Markers interface {
	// Mark records that subject was erased at at; a later time replaces an
	// earlier one, an earlier one changes nothing.
	Mark(ctx context.Context, subject audit.Digest, at time.Time) error
	// Lookup returns, for each subject, when it was erased, or the zero
	// time when it never was. The result has the length of subjects.
	Lookup(ctx context.Context, subjects []audit.Digest) ([]time.Time, error)
}

// Locker is a lock across processes. connectors/redis.Locker satisfies it.
type Locker interface {
	// Lock takes the named lock or fails with an error wrapping ErrLocked
	// when another holder has it. held ends when the lock is lost (it
	// could not be renewed) or released; release frees it.
	Lock(ctx context.Context, name string) (held context.Context, release func(), err error)
}

// Ledger appends audit leaves durably (the audit topic). Append returns
// once every leaf is durable.
type Ledger interface {
	// Append appends leaves, in order.
	Append(ctx context.Context, leaves []audit.Leaf) error
}

// RulesSource hands out the ruleset in force. rules.Cache satisfies it.
type RulesSource interface {
	// Current returns the ruleset in force, or an error when there is none.
	Current() (*rules.Ruleset, error)
}

// EventReader reads the placement inputs (country, user id) of a record
// of a topic. NewEventReader builds one on the schemas extractor. Errors
// wrapping schemas.ErrRegistryUnavailable are transient (a scan stops and
// says so); any other error makes the record unreadable (counted, never
// guessed).
type EventReader interface {
	// Fields reads m, a record of t.
	Fields(ctx context.Context, t Topic, m *stream.Message) (schemas.Fields, error)
}

// ReplaySource lists the replays the purge must respect: the finished ones
// (whose ranges of quarantine and dead-letter may go) and those still
// running (whose unread offsets must stay). Built from the replay
// checkpoints (router/replay).
type ReplaySource interface {
	// Replays returns every replay known.
	Replays(ctx context.Context) ([]ReplayState, error)
}

// OffsetRange is the half-open range [Start, End) of one partition.
type OffsetRange struct {
	// Partition is the partition.
	Partition int `json:"partition"`
	// Start is the first offset.
	Start int64 `json:"start"`
	// End is the offset after the last one.
	End int64 `json:"end"`
}

// ReplayState is what the purge needs of one replay's checkpoint.
type ReplayState struct {
	// ID is the replay id.
	ID string
	// Topic is the topic it read (on the ingest cluster).
	Topic string
	// Ranges are its planned ranges.
	Ranges []OffsetRange
	// Next is, per partition, the next offset it would read.
	Next map[int]int64
	// Complete is true once every range was read.
	Complete bool
	// DryRun is true for a dry run (it moved nothing).
	DryRun bool
	// Kept is how many events of its ranges it left where they were: left
	// out by a filter, still unplaceable or undecodable, refused by the
	// loop guard, already replayed by another replay. Used only when
	// KeptFrom is nil: its ranges can then go only when Kept is 0.
	Kept int64
	// KeptFrom is, when known (not nil), per partition the offset of the
	// first event left in place: the range can go up to it; a partition it
	// does not name kept nothing. Nil when the checkpoint does not say
	// (written by an earlier version): Kept decides.
	KeptFrom map[int]int64
}
