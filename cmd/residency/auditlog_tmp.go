package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/stream"
)

// This file is a stand-in: a minimal auditwire.Log over connectors/kafka's
// idempotent Producer, until connectors/kafka.AuditLog (written in
// parallel) is on main. Then newAuditLog returns that one and this file
// goes.

// auditAppendTimeout bounds one Append: past it the caller (a sink's
// ledger, purge, erase) gets an error, reports it and retries, instead of
// waiting on an audit topic it cannot write.
const auditAppendTimeout = 10 * time.Second

// tmpAuditLog appends audit records to the audit topic (audit.topic, one
// partition, on the ingest cluster), acknowledged by all in-sync replicas.
type tmpAuditLog struct {
	p     *kafka.Producer
	topic string
}

// newAuditLog opens the audit topic's writer of the config.
func newAuditLog(cfg *config.Config, log *slog.Logger) (*tmpAuditLog, error) {
	pc := producerConfig(cfg, cfg.Kafka.IngestCluster)
	pc.DeliveryTimeout = auditAppendTimeout
	pc.Logger = log
	p, err := kafka.NewProducer(pc)
	if err != nil {
		return nil, config.ClusterError(cfg.Kafka.IngestCluster, err)
	}
	return &tmpAuditLog{p: p, topic: cfg.AuditTopic()}, nil
}

// Append writes records to the audit topic in order and returns once all
// are acknowledged, or with an error within auditAppendTimeout.
func (a *tmpAuditLog) Append(ctx context.Context, records ...[]byte) error {
	if len(records) == 0 {
		return nil
	}
	msgs := make([]stream.Message, len(records))
	for i, r := range records {
		msgs[i] = stream.Message{Topic: a.topic, Value: r}
	}
	ctx, cancel := context.WithTimeout(ctx, auditAppendTimeout)
	defer cancel()
	if err := a.p.Publish(ctx, msgs...); err != nil {
		return fmt.Errorf("audit topic %s: %w", a.topic, err)
	}
	return nil
}

// Close waits for what is in flight, then closes the producer.
func (a *tmpAuditLog) Close() error { return a.p.Close() }
