package postgres

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/residency-router/residency/audit"
)

// AuditRows calls fn with every row of the table as `audit verify` sees
// it, in (topic, partition, kafka_offset) order: topic, partition,
// kafka_offset, the SHA-256 of raw (computed by PostgreSQL), region,
// jurisdiction, ruleset_version, and the digests of event_id, user_id and
// event (audit.Row.SetColumns; event as jsonb renders it, which
// audit.EventDigest reduces to the document the sink wrote). With dec,
// raw is read too and decoded again, so the verifier can compare those
// columns with what the sink writes for the value; without, it is not
// read. No id or payload leaves this function but as a digest. cluster is
// set on every row (the table does not hold it). dec's errors other than
// audit.ErrUndecodable stop it.
func (s *Store) AuditRows(ctx context.Context, cluster string, dec audit.EventDecoder, fn func(*audit.Row) error) error {
	raw := `NULL::bytea`
	if dec != nil {
		raw = `raw`
	}
	rows, err := s.pool.Query(ctx, `SELECT topic, partition, kafka_offset, sha256(coalesce(raw, ''::bytea)), coalesce(region, ''), coalesce(jurisdiction, ''), `+
		`coalesce(ruleset_version, ''), coalesce(event_id, ''), coalesce(user_id, ''), coalesce(event::text, ''), coalesce(source_topic, ''), `+raw+` FROM `+s.ident+` ORDER BY topic, partition, kafka_offset`)
	if err != nil {
		return fmt.Errorf("postgres: read %s: %w", s.ident, err)
	}
	defer rows.Close()
	for rows.Next() {
		r := audit.Row{Cluster: cluster}
		var digest, value []byte
		var eventID, userID, event, sourceTopic string
		if err := rows.Scan(&r.Topic, &r.Partition, &r.Offset, &digest, &r.Region, &r.Jurisdiction, &r.RulesetVersion,
			&eventID, &userID, &event, &sourceTopic, &value); err != nil {
			return fmt.Errorf("postgres: read %s: %w", s.ident, err)
		}
		if len(digest) != sha256.Size {
			return fmt.Errorf("postgres: read %s: digest of %d bytes", s.ident, len(digest))
		}
		copy(r.Value[:], digest)
		if err := r.SetColumns(ctx, dec, eventID, userID, []byte(event), sourceTopic, value); err != nil {
			return fmt.Errorf("postgres: read %s: %w", s.ident, err)
		}
		if err := fn(&r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("postgres: read %s: %w", s.ident, err)
	}
	return nil
}
