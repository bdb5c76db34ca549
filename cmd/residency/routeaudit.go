package main

import (
	"cmp"
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/config"
)

// routeAudit is what route and replay write the audit with when
// audit.enabled: the audit topic's writer, the ledger of decision leaves
// over it and the attester of the records they write.
type routeAudit struct {
	log      *kafka.AuditLog
	ledger   *auditwire.Ledger
	attester *auditwire.Attester
}

// wireRouteAudit builds the audit of route (kind audit.KindRoute) or replay
// (audit.KindReplay), actor naming it in the leaves, or returns nil when
// audit.enabled is false. A key that cannot be used is a config error
// naming its field (exit 2). It logs once that the audit is on, with the
// topic and the signing key's id.
func wireRouteAudit(cfg *config.Config, actor string, kind audit.Kind, log *slog.Logger) (*routeAudit, error) {
	a := &cfg.Audit
	if !a.Enabled {
		return nil, nil
	}
	if actor == "" {
		actor, _ = os.Hostname()
		actor = cmp.Or(actor, "router")
	}
	key, ok, err := a.SignKey()
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, config.FieldError("audit.attestation.sign_key", errMissing("required when audit.enabled"))
	}
	subjects, err := a.Pseudonymizer()
	if err != nil {
		return nil, err
	}
	att, err := auditwire.NewAttester(key)
	if err != nil {
		return nil, config.FieldError("audit.attestation.sign_key", err)
	}
	topic := cfg.AuditTopic()
	al, err := newAuditLog(cfg, log)
	if err != nil {
		return nil, err
	}
	led, err := auditwire.NewLedger(al, auditwire.LedgerConfig{Actor: actor, Kind: kind, Subjects: subjects,
		MaxRecordBytes: al.MaxRecordBytes()})
	if err != nil {
		_ = al.Close(context.Background())
		return nil, config.FieldError("audit", err)
	}
	log.Info("audit on: every record written is attested, every decision logged before its offset is committed",
		"topic", topic, "cluster", cfg.Kafka.IngestCluster, "key_id", key.ID, "subjects", subjects != nil)
	return &routeAudit{log: al, ledger: led, attester: att}, nil
}

// close waits up to wait for what was appended, then closes the audit
// topic's writer.
func (r *routeAudit) close(wait time.Duration) error {
	if r == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return r.log.Close(ctx)
}

// errMissing is a plain error for a required field.
type errMissing string

func (e errMissing) Error() string { return string(e) }
