package postgres

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/residency-router/residency/audit"
)

// AuditRows calls fn with every row of the table as `audit verify` sees
// it: topic, partition, kafka_offset, the SHA-256 of raw, region and
// jurisdiction (never the payload itself), in (topic, partition,
// kafka_offset) order. cluster is set on every row (the table does not hold
// it).
func (s *Store) AuditRows(ctx context.Context, cluster string, fn func(*audit.Row) error) error {
	rows, err := s.pool.Query(ctx, `SELECT topic, partition, kafka_offset, sha256(coalesce(raw, ''::bytea)), region, jurisdiction FROM `+
		s.ident+` ORDER BY topic, partition, kafka_offset`)
	if err != nil {
		return fmt.Errorf("postgres: read %s: %w", s.ident, err)
	}
	defer rows.Close()
	for rows.Next() {
		r := audit.Row{Cluster: cluster}
		var digest []byte
		if err := rows.Scan(&r.Topic, &r.Partition, &r.Offset, &digest, &r.Region, &r.Jurisdiction); err != nil {
			return fmt.Errorf("postgres: read %s: %w", s.ident, err)
		}
		if len(digest) != sha256.Size {
			return fmt.Errorf("postgres: read %s: digest of %d bytes", s.ident, len(digest))
		}
		copy(r.Value[:], digest)
		if err := fn(&r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: read %s: %w", s.ident, err)
	}
	return nil
}
