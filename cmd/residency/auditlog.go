package main

import (
	"log/slog"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/config"
)

// newAuditLog opens the writer of the config's audit topic (audit.topic,
// one partition, on the ingest cluster): every record acknowledged by all
// in-sync replicas before Append returns. route, sink, purge and erase
// write their leaves through it.
func newAuditLog(cfg *config.Config, log *slog.Logger) (*kafka.AuditLog, error) {
	al, err := kafka.NewAuditLog(kafka.AuditLogConfig{Cluster: producerConfig(cfg, cfg.Kafka.IngestCluster).Cluster,
		Topic: cfg.AuditTopic(), Logger: log})
	if err != nil {
		return nil, config.ClusterError(cfg.Kafka.IngestCluster, err)
	}
	return al, nil
}
