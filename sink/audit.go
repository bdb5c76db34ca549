package sink

import (
	"context"
	"errors"
	"fmt"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/stream"
)

// This file is the sink's side of the audit (docs/audit.md): the check that
// every record it reads was written by a router (its attestation), and the
// leaves of what it did with each record, made durable before it commits.
// The sink owns both ports and imports no audit code: auditwire adapts
// package audit to them.

// ReasonBadAttestation: the event has no residency-attestation header, one
// made with a key the sink does not know (never known, or retired), or one
// that does not match the record as read (its value, key, residency headers
// or the pinned topic and cluster it was read from): no router wrote it
// this way. Checked first, before any other header is believed. Only with
// an attestation check configured (Config.Attestation, audit.enabled).
const ReasonBadAttestation = "sink_bad_attestation"

// Attestation checks that a record read from a pinned topic is one a
// router wrote there (auditwire.SinkAttestation over audit.AttestVerifier).
// It is called from one goroutine at a time.
//
// Memory contract: msg is borrowed for the call; sums is the caller's, and
// Check may set it (Set true) to the SHA-256 digests of msg's value and
// key, which the sink then hands to its Ledger in Entry.Sums so that the
// record is hashed once.
type Attestation interface {
	// Check returns nil when msg, read from topic on cluster, carries a
	// valid attestation of the record exactly as read; otherwise an error
	// saying why (never the tag or the payload).
	Check(cluster, topic string, msg *stream.Message, sums *router.RecordSums) error
}

// Ledger makes the audit record of what a sink did durable: one entry per
// record stored or refused (auditwire.SinkLedger, leaves on the audit
// topic). The sink calls Record after the store accepted the batch and the
// refused records are in its quarantine topic, and commits the batch's
// offsets only once Record has returned nil: no committed offset without
// its leaf. A sink killed between Record and the commit logs the batch
// again when it is redelivered (duplicates the verifier explains).
//
// Memory contract: entries and everything they point to are borrowed for
// the call. A Record error is transient: the sink retries it (reporting
// not-ready meanwhile) and commits nothing.
type Ledger interface {
	// Record appends the leaves of entries durably before it returns nil.
	Record(ctx context.Context, entries []Entry) error
}

// Entry is one record a sink stored or refused, as given to Ledger.Record.
type Entry struct {
	// Msg is the record read from the pinned topic (its topic, partition,
	// offset, key, value and residency headers).
	Msg *stream.Message
	// Written is true when the store holds it, false when it was refused.
	Written bool
	// Reason is, for a refused record, why (a Reason constant).
	Reason string
	// EventID and UserID are the event's ids ("" when unknown), for the
	// keyed hashes; the ledger never stores them as they are.
	EventID, UserID string
	// Ruleset is the ruleset in force when the sink wrote (or refused) it.
	Ruleset *rules.Ruleset
	// Sums are the SHA-256 digests of Msg.Value and Msg.Key when the
	// attestation check computed them (Sums.Set): the ledger takes them
	// from here instead of hashing the record again.
	Sums router.RecordSums
	// QuarantineTopic, QuarantinePartition and QuarantineOffset are, for a
	// refused record, where its copy went; the offset is -1 when the
	// quarantine publisher does not say (PlacingPublisher). QuarantineTopic
	// is "" for an erased user's event (Reason ReasonErased), which is
	// neither stored nor quarantined.
	QuarantineTopic     string
	QuarantinePartition int32
	QuarantineOffset    int64
}

// PlacingPublisher is a quarantine publisher that also says where each
// record went (connectors/kafka.Producer through a small adapter). With a
// Ledger, a sink whose quarantine publisher implements it records the
// quarantine coordinates of each refused record in its leaf, which is what
// lets the verifier match the sink quarantine topic's records to leaves.
type PlacingPublisher interface {
	// PublishPlaced writes msgs as stream.Publisher.Publish does and
	// returns, for each, its partition and offset (-1 when unknown).
	PublishPlaced(ctx context.Context, msgs []stream.Message) (partitions []int32, offsets []int64, err error)
}

// errLedger is the readiness error while the ledger fails.
var errLedger = errors.New("audit ledger")

// checkAttestation refuses it (ReasonBadAttestation) unless its
// attestation is valid. It runs before anything else reads its headers.
func (s *Sink) checkAttestation(it *item) {
	if s.cfg.Attestation == nil {
		return
	}
	if err := s.cfg.Attestation.Check(s.cfg.Cluster, s.cfg.Topic, &it.msg, &it.sums); err != nil {
		it.refuse(ReasonBadAttestation, fmt.Errorf("attestation: %w", err))
	}
}

// publishQuarantine publishes quar and returns where each record went
// (partition and offset -1 when the publisher does not say).
func (s *Sink) publishQuarantine(ctx context.Context, quar []stream.Message) (parts []int32, offs []int64, err error) {
	if pp, ok := s.quarantine.(PlacingPublisher); ok && s.cfg.Ledger != nil {
		parts, offs, err = pp.PublishPlaced(ctx, quar)
		if err == nil && (len(parts) != len(quar) || len(offs) != len(quar)) {
			err = fmt.Errorf("quarantine publisher placed %d of %d records", min(len(parts), len(offs)), len(quar))
		}
		return parts, offs, err
	}
	return nil, nil, s.quarantine.Publish(ctx, quar...)
}

// record appends the batch's entries to the ledger, retried until it
// succeeds or ctx ends; the sink reports not-ready while it fails.
func (s *Sink) recordLedger(ctx context.Context, b []item, written, refused []int, rs *rules.Ruleset, qparts []int32, qoffs []int64) error {
	if s.cfg.Ledger == nil {
		return nil
	}
	entries := make([]Entry, 0, len(written)+len(refused))
	for _, i := range written {
		it := &b[i]
		entries = append(entries, Entry{Msg: &it.msg, Written: true, EventID: it.eventID, UserID: it.userID, Ruleset: rs, Sums: it.sums})
	}
	for j, i := range refused {
		it := &b[i]
		e := Entry{Msg: &it.msg, Reason: it.finalReason, EventID: it.eventID, UserID: it.userID, Ruleset: rs, Sums: it.sums,
			QuarantineTopic: s.cfg.QuarantineTopic, QuarantinePartition: -1, QuarantineOffset: -1}
		if j < len(qparts) && j < len(qoffs) {
			e.QuarantinePartition, e.QuarantineOffset = qparts[j], qoffs[j]
		}
		entries = append(entries, e)
	}
	// An erased user's event is neither stored nor quarantined: its leaf
	// says so, without a destination.
	for i := range b {
		if it := &b[i]; it.erased {
			entries = append(entries, Entry{Msg: &it.msg, Reason: ReasonErased, EventID: it.eventID, UserID: it.userID, Ruleset: rs, Sums: it.sums,
				QuarantinePartition: -1, QuarantineOffset: -1})
		}
	}
	if len(entries) == 0 {
		return nil
	}
	failed := false
	err := s.retry.Do(ctx, "ledger", func(ctx context.Context) error {
		err := s.cfg.Ledger.Record(ctx, entries)
		if err != nil {
			failed = true
			e := fmt.Errorf("%w: %w: %w", ErrNotReady, errLedger, err)
			s.ledgerErr.Store(&e)
			s.m.ready.Set(0)
			return fmt.Errorf("%d leaves: %w", len(entries), err)
		}
		return nil
	})
	if err == nil && failed {
		s.ledgerErr.Store(nil)
		s.log.Info("sink: audit ledger written again; committing resumes")
	}
	return err
}
