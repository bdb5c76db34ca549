package main

import (
	"context"
	"fmt"

	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/sink"
	"github.com/residency-router/residency/stream"
)

// This file is the audit side of `residency sink` (docs/audit.md): with
// audit.enabled the sink refuses records without a valid attestation
// (audit.attestation.verify_keys) and makes a sink_write or sink_refusal
// leaf of every record durable on the audit topic before it commits.

// wireAudit sets scfg's attestation check and ledger when audit.enabled,
// and makes the quarantine publisher one that says where each record went
// (the sink_refusal leaves hold the quarantine coordinates). With the
// audit off it changes nothing.
func (w *sinkWiring) wireAudit(cfg *config.Config, sc *config.SinkConfig, scfg *sink.Config) (int, error) {
	if !cfg.Audit.Enabled {
		return exitOK, nil
	}
	v, err := cfg.Audit.Verifier()
	if err != nil {
		return exitUsage, err
	}
	if scfg.Attestation, err = auditwire.NewSinkAttestation(v); err != nil {
		return exitUsage, config.FieldError("audit.attestation.verify_keys", err)
	}
	pz, err := cfg.Audit.Pseudonymizer()
	if err != nil {
		return exitUsage, err
	}
	if w.auditLog, err = newAuditLog(cfg, w.log); err != nil {
		return exitUsage, err
	}
	ledger, err := auditwire.NewSinkLedger(w.auditLog, auditwire.SinkLedgerConfig{Store: sc.Store, Cluster: sc.Cluster,
		QuarantineCluster: sc.QuarantineCluster, Pseudonymizer: pz})
	if err != nil {
		return exitUsage, config.FieldError(cfg.SinkField(sc), err)
	}
	scfg.Ledger = ledger
	pc := producerConfig(cfg, sc.QuarantineCluster)
	pc.Logger = w.log
	p, err := kafka.NewProducer(pc)
	if err != nil {
		return exitUsage, config.ClusterError(sc.QuarantineCluster, err)
	}
	w.placing = &placingProducer{p}
	w.log.Info("sink: audit on: attestation checked, leaves on the audit topic", "audit_topic", cfg.AuditTopic(),
		"verify_keys", len(cfg.Audit.Attestation.VerifyKeys))
	return exitOK, nil
}

// placingProducer is the sink's quarantine publisher with the audit on: the
// idempotent Producer, which reports each record's partition and offset
// (sink.PlacingPublisher).
type placingProducer struct{ p *kafka.Producer }

// Publish implements stream.Publisher.
func (q *placingProducer) Publish(ctx context.Context, msgs ...stream.Message) error {
	_, _, err := q.PublishPlaced(ctx, msgs)
	return err
}

// PublishPlaced implements sink.PlacingPublisher.
func (q *placingProducer) PublishPlaced(ctx context.Context, msgs []stream.Message) ([]int32, []int64, error) {
	ch := make(chan kafka.Ack, 1)
	if err := q.p.Produce(ctx, msgs, func(a kafka.Ack) { ch <- a }); err != nil {
		return nil, nil, fmt.Errorf("quarantine: %w", err)
	}
	select {
	case a := <-ch:
		if a.Err != nil {
			return nil, nil, fmt.Errorf("quarantine: %w", a.Err)
		}
		return a.Partitions, a.Offsets, nil
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("quarantine: %w", ctx.Err())
	}
}

// Close closes the producer.
func (q *placingProducer) Close() error { return q.p.Close() }
