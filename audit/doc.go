// Package audit is residency's tamper-evident decision log: the decision
// leaf and its canonical encoding, the attestation routers put on the
// records they write, the integrator that appends leaves to a Merkle tree
// log stored as C2SP tlog-tiles in an object store and signs checkpoints,
// the reader and verifier of that log, inclusion proofs, and the checks
// `residency audit verify` runs over the log, the topics and the stores.
//
// The package imports nothing else of this module: coordinates, records and
// rows are plain types defined here, and the router, the sinks and the
// commands adapt their own types to them. See docs/audit.md for the design,
// the formats and the threat model.
package audit
