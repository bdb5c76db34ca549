// Package schemas holds the Avro event contract of residency: the embedded
// .avsc files, the three wire framings producers use (Confluent wire format,
// Avro single-object encoding, raw Avro binary with a configured schema), a
// schema registry client, fast extraction of single fields from encoded
// records, and full decoding for sinks.
//
// The router calls Extractor.Extract on every event: it removes the framing,
// finds the writer schema (registry id, fingerprint or per-topic
// configuration, cached) and runs a skip program compiled for that writer
// schema, which walks the binary record without decoding what it does not
// need and captures the country and user id (Fields). Sinks call
// Extractor.Decode or DecodeJSON, which decode the whole record with goavro.
// CheckRoutable and CheckBackward answer `residency schemas check`.
//
// Errors wrap the sentinels of fields.go so that callers can branch with
// errors.Is and label dead-letters with Reason. See docs/ingest-contract.md.
//
// It is a leaf package: it imports no other package of this module.
package schemas
