package objectstore

import (
	"context"
	"fmt"

	"github.com/residency-router/residency/audit"
)

// AuditRows calls fn with every record of every object (object by object
// in name order) as `audit verify` sees it: topic, partition, offset, the
// SHA-256 of raw, region, jurisdiction, ruleset_version, and the digests
// of event_id, user_id and event (audit.Row.SetColumns), with dec (nil:
// none) raw decoded again so the verifier can compare those columns with
// what the sink writes for the value; the payload is hashed and dropped.
// A record held by two overlapping objects (a batch written again after a
// crash) comes out twice. cluster is set on every row (objects do not hold
// it). An object that cannot be read stops it with an error naming the
// object, as do dec's errors other than audit.ErrUndecodable.
func (s *Store) AuditRows(ctx context.Context, cluster string, dec audit.EventDecoder, fn func(*audit.Row) error) error {
	keys, err := s.keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		o, err := s.read(ctx, k)
		if err != nil {
			return err
		}
		for _, m := range o.records {
			er := rowOf(k, m)
			raw, _ := m["raw"].([]byte)
			r := audit.Row{Cluster: cluster, Topic: er.Topic, Partition: int32(er.Partition), Offset: er.Offset,
				Value: audit.Sum(raw), Region: er.Region, Jurisdiction: er.Jurisdiction, RulesetVersion: er.RulesetVersion}
			if err := r.SetColumns(ctx, dec, er.EventID, er.UserID, er.Event, er.SourceTopic, raw); err != nil {
				return fmt.Errorf("objectstore: read %s: %w", k, err)
			}
			if err := fn(&r); err != nil {
				return err
			}
		}
	}
	return nil
}
