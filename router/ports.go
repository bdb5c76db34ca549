package router

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

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

// PinSource hands out the per-user pins in force, from memory.
// rules.Pins satisfies it.
type PinSource interface {
	// Pins returns a view of the whole pin set, without a round trip, or
	// an error when there is no valid one (never loaded, or stale: not
	// confirmed against Redis within the staleness bound); the router then
	// stops consuming until it returns one again, as for the ruleset.
	Pins() (PinView, error)
}

// PinView is one consistent, immutable view of the pin set: Pin(userID)
// returns the jurisdiction the user is pinned to, "" for none, without
// allocating (tens of nanoseconds), safe for concurrent use while
// changes arrive (they make a new view). It is rules.PinView: a type
// alias, because rules (which router imports) cannot name a router type
// in rules.Pins' method.
type PinView = rules.PinView

// PinLookup returns per-user jurisdiction overrides. rules.Pins satisfies
// it, from its in-memory view (Pins is the port the batch loop uses).
type PinLookup interface {
	// Lookup returns, for each user id, the name of the jurisdiction the
	// user is pinned to, or "" if the user has no pin. The result has the
	// same length as userIDs.
	Lookup(ctx context.Context, userIDs [][]byte) ([]string, error)
}

// Ledger makes the audit record of settled events durable (docs/audit.md),
// in two steps, so that the router neither keeps an event (and the fetch
// response it points into) until its commit nor builds every leaf in its
// committer (docs/router.md, "The window"):
//
//   - AppendLeaf encodes the decision leaf of one event as soon as every
//     destination has acknowledged it, on the acknowledging sender's
//     goroutine (several at once: one per destination cluster);
//   - Append makes a run of such leaves durable, from the committer, which
//     commits the events' source offsets only once Append has returned nil:
//     no committed offset without its leaf.
//
// A router killed between Append and the commit leaves leaves of offsets
// that are routed (and recorded) again, which the verifier explains as
// duplicates.
//
// Memory contract: AppendLeaf borrows s and everything it points to
// (the event, its message, fields and the ruleset) for the call only: the
// leaf it appends to dst holds copies, never references. Append borrows
// rulesets and leaves for the call. A Ledger may remember which rulesets it
// logged (their version and digest) and the ruleset of its last AppendLeaf
// (rulesets are small and immutable), nothing else. AppendLeaf is called
// concurrently (from every sender); Append from one goroutine at a time,
// never concurrently with itself.
type Ledger interface {
	// AppendLeaf appends the encoded decision leaf of s (its source, its
	// decision under s.Ruleset, its destination) to dst and returns it. It
	// does no I/O. An error (a leaf that cannot be encoded) is permanent:
	// the router never commits the event's partition past it.
	AppendLeaf(dst []byte, s *Settled) ([]byte, error)
	// Append appends, durably (acknowledged by every in-sync replica of
	// the audit topic), the ruleset leaf of each of rulesets it has not
	// logged yet, then leaves (each as AppendLeaf encoded it, in order),
	// before it returns nil. rulesets holds every ruleset a leaf of leaves
	// was decided under. An error is transient: the router retries the
	// same call under its retry policy and commits nothing past those
	// events meanwhile.
	Append(ctx context.Context, rulesets []*rules.Ruleset, leaves [][]byte) error
}

// RecordSettled makes the leaves of settled durable in l in one Append
// (AppendLeaf for each, then Append): the one-step use of a Ledger, for
// callers that hold their events until their batch is recorded anyway
// (replay).
func RecordSettled(ctx context.Context, l Ledger, settled []Settled) error {
	if len(settled) == 0 {
		return nil
	}
	buf := make([]byte, 0, 192*len(settled))
	ends := make([]int, len(settled))
	var rss []*rules.Ruleset
	for i := range settled {
		var err error
		if buf, err = l.AppendLeaf(buf, &settled[i]); err != nil {
			return err
		}
		ends[i] = len(buf)
		if rs := settled[i].Ruleset; rs != nil && (len(rss) == 0 || rss[len(rss)-1] != rs) && !slices.Contains(rss, rs) {
			rss = append(rss, rs)
		}
	}
	leaves := make([][]byte, len(settled))
	start := 0
	for i, e := range ends {
		leaves[i] = buf[start:e:e]
		start = e
	}
	return l.Append(ctx, rss, leaves)
}

// Settled is an event whose destination acknowledged it, as given to
// Ledger.AppendLeaf.
type Settled struct {
	// Event is the decided event: Event.Msg holds its source coordinates,
	// Event.Decision where it went and why, Event.Fields its jurisdiction
	// inputs.
	Event *Event
	// Ruleset is the ruleset it was published under.
	Ruleset *rules.Ruleset
	// Cluster and Topic are where it was written.
	Cluster, Topic string
	// Partition and Offset are its place in Topic, from the produce
	// acknowledgement; Offset is -1 when the broker did not say.
	Partition int32
	Offset    int64
	// At is when it settled: the router reads one produce result's
	// acknowledgements at one clock reading, which every event of it
	// shares. Zero: the Ledger reads its own clock.
	At time.Time
}

// Partition names one partition of an ingest topic.
type Partition struct {
	// Topic is the topic name.
	Topic string
	// Partition is the partition id.
	Partition int
}

// Offset is a position to commit in one partition of an ingest topic:
// Next is the offset of the next record to read (the last processed
// record's offset + 1).
type Offset struct {
	// Topic is the topic name.
	Topic string
	// Partition is the partition id.
	Partition int
	// Next is the offset of the next record to read.
	Next int64
}

// Sentinel errors of the loop's ports.
var (
	// ErrNotAssigned is wrapped by BatchConsumer.Commit for partitions the
	// member does not hold (any more): their offsets were not committed,
	// and retrying cannot help (their new owner reads them again).
	ErrNotAssigned = errors.New("partition not assigned to this member")
	// ErrTopicMissing is wrapped by AsyncProducer.Produce (and
	// TopicChecker.CheckTopics) when a destination topic does not exist on
	// the cluster; MissingTopicError names it.
	ErrTopicMissing = errors.New("topic does not exist")
)

// MissingTopicError is the error of a produce to (or check of) a topic the
// cluster does not have. It matches ErrTopicMissing (errors.Is).
type MissingTopicError struct {
	// Topic is the missing topic.
	Topic string
	// Err is the client's error, if any.
	Err error
}

// Error returns "topic T does not exist".
func (e *MissingTopicError) Error() string { return "topic " + e.Topic + " does not exist" }

// Is reports whether target is ErrTopicMissing.
func (e *MissingTopicError) Is(target error) bool { return target == ErrTopicMissing }

// Unwrap returns the client's error.
func (e *MissingTopicError) Unwrap() error { return e.Err }

// BatchConsumer reads the ingest topics in batches as a member of the
// router's consumer group (connectors/kafka.Consumer through its router
// adapter). Nothing is committed but what Commit is given. The hook that
// commits before partitions are revoked is Router.Revoked: the wiring
// passes it to the consumer (connectors/kafka.ConsumerConfig.OnRevoke),
// which must call it from within Poll, in the caller's goroutine, before
// it gives up partitions.
type BatchConsumer interface {
	// Poll appends up to max records to dst and returns it, waiting until
	// at least one is available or ctx ends (then it returns ctx's error).
	// Records of one partition come in offset order. The records' memory
	// stays valid as long as the caller keeps them.
	Poll(ctx context.Context, dst []stream.Message, max int) ([]stream.Message, error)
	// Commit commits offsets for the group. For partitions the member does
	// not hold it returns an error wrapping ErrNotAssigned (after committing
	// the others).
	Commit(ctx context.Context, offsets ...Offset) error
	// Joined reports whether the member is in a generation of the group.
	Joined() bool
	// Err reports what currently keeps the consumer from fetching (the
	// ingest cluster unreachable), or nil.
	Err() error
}

// ProduceAck is the outcome of one AsyncProducer.Produce call.
type ProduceAck struct {
	// Err is nil when every record was written; otherwise some (those
	// whose Offsets are -1) may not have been.
	Err error
	// Partitions[i] is the partition record i was written to.
	Partitions []int32
	// Offsets[i] is record i's offset in its partition, -1 when it was not
	// written or the broker did not say.
	Offsets []int64
	// Retained is true when the producer may still read the records' memory
	// after done (a synchronous stream.Publisher behind the port whose
	// Publish failed once): the caller then never reuses it.
	Retained bool
}

// AsyncProducer writes records to one Kafka cluster without waiting for
// them (connectors/kafka.Producer through its router adapter). Records
// with equal keys go to the same partition of a topic, in the order of the
// Produce calls; a producer retries transient failures itself (Produce's
// done reports only what it will not retry).
//
// Memory contract: msgs and everything they point to are borrowed until
// done is called (or Produce returns an error), unless the ack says
// Retained; a producer that implements RecordCopier and says so borrows
// them only until Produce returns.
type AsyncProducer interface {
	// Produce queues msgs and returns; done is called once, from any
	// goroutine and without blocking, when every record is acknowledged or
	// failed. It fails at once, without calling done, for a topic the
	// cluster does not have (an error wrapping ErrTopicMissing) or when ctx
	// ends while it waits for buffer space.
	Produce(ctx context.Context, msgs []stream.Message, done func(ProduceAck)) error
	// Err reports what currently keeps the producer from writing (a broker
	// unreachable), or nil.
	Err() error
}

// RecordCopier is implemented by AsyncProducers that may copy the records
// given to Produce (encode them into buffers of their own) before it
// returns. When CopiesRecords reports true, Produce keeps no reference to
// msgs nor to anything they point to once it returns (with or without an
// error), its acks never say Retained, and the caller may reuse that
// memory at once: the router then frees a chunk's outgoing records and
// their headers as soon as they are handed over, not when they are
// acknowledged, and builds them again from the decided events for the
// rare resend (docs/router.md, "Records and headers").
type RecordCopier interface {
	// CopiesRecords reports whether Produce keeps no reference to its
	// records once it returns. Its answer never changes.
	CopiesRecords() bool
}

// TopicChecker is implemented by producers that can say whether topics
// exist on their cluster; the router checks every destination of the
// ruleset with it at start and on every ruleset change (the preflight).
type TopicChecker interface {
	// CheckTopics returns nil when every topic exists, an error wrapping
	// ErrTopicMissing (a MissingTopicError) naming one that does not, or
	// another error when the cluster cannot be asked.
	CheckTopics(ctx context.Context, topics []string) error
}

// Attester makes the attestation of the records the router and replay
// write (docs/audit.md): a keyed tag, carried in the HeaderAttestation
// header, that binds the record's key and value to the decision that
// placed it and to its source and destination, so that a sink (and the
// verifier) can tell a record a router wrote from one written by anyone
// else. auditwire.NewAttester implements it over audit.Attester.
//
// Memory contract: rec and everything it points to are borrowed for the
// call. An Attester must be safe for concurrent use: a Router calls it
// from the senders of every cluster and spreads a large chunk's records
// over several goroutines (one per core); a Pipeline's Route calls it from
// one goroutine at a time.
type Attester interface {
	// AppendAttestation appends the attestation tag of rec (the header's
	// value) to dst and returns it, without allocating when dst has room.
	AppendAttestation(dst []byte, rec *AttestedRecord) []byte
}

// AttestedRecord is a record the router writes, as an Attester sees it:
// what it read, how it decided, and what it writes where.
type AttestedRecord struct {
	// Event is the decided event: Event.Msg holds its source coordinates
	// (Topic, Partition, Offset), Event.Decision its outcome, reason,
	// jurisdiction and region.
	Event *Event
	// RulesetVersion is the ruleset version the record's
	// HeaderRulesetVersion header carries, 0 when it carries none (a
	// dead-lettered event).
	RulesetVersion int64
	// Cluster and Topic are where the record is written.
	Cluster, Topic string
	// Key and Value are the record's key (nil for a null key) and value as
	// written (a too_large dead-letter record carries neither).
	Key, Value []byte
}
