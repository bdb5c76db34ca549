// Package schemas holds the Avro event contract of residency: the embedded
// .avsc files, the three wire framings producers use (Confluent wire format,
// Avro single-object encoding, raw Avro binary with a configured schema), a
// schema registry client, fast extraction of single fields from encoded
// records, and full decoding for sinks.
//
// It is a leaf package: it imports no other package of this module.
package schemas
