// Package auditwire connects the runtimes (the router, replay, the sinks,
// purge and erase) to the audit log core (package audit): it implements
// their audit ports (router.Ledger, the attestation of the records they
// write, the sinks' check and leaves) by building decision leaves and
// attestation tags with package audit and appending audit records to a
// Log. It holds no client library: the audit topic is reached through Log
// (connectors/kafka.AuditLog). See docs/audit.md.
package auditwire

import "context"

// Log is where audit records go: the audit topic on the ingest cluster
// (connectors/kafka.AuditLog implements it).
type Log interface {
	// Append writes records (each an audit wire record: audit.WireRecord)
	// in order and durably, acknowledged by every
	// in-sync replica of the audit topic, before it returns nil. It keeps
	// no reference to records after it returns. An error is transient: the
	// caller retries and commits nothing meanwhile.
	Append(ctx context.Context, records ...[]byte) error
}
