package objectstore

import (
	"context"

	"github.com/residency-router/residency/audit"
)

// AuditRows calls fn with every record of every object (object by object
// in name order) as `audit verify` sees it: topic, partition, offset, the
// SHA-256 of raw, region and jurisdiction; the payload is hashed and
// dropped. cluster is set on every row (objects do not hold it). An object
// that cannot be read stops it with an error naming the object.
func (s *Store) AuditRows(ctx context.Context, cluster string, fn func(*audit.Row) error) error {
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
				Value: audit.Sum(raw), Region: er.Region, Jurisdiction: er.Jurisdiction}
			if err := fn(&r); err != nil {
				return err
			}
		}
	}
	return nil
}
