// Package router is the routing engine of residency: it reads each event from
// the ingest topics, decides which jurisdiction and region it belongs to, and
// republishes it, byte for byte with residency headers added, to that
// region's pinned topic, or to quarantine or dead-letter on the ingest
// cluster.
//
// The decision (Decide) is pure code with no I/O. The pipeline (Router)
// speaks to Kafka, Redis and the schemas package only through small
// interfaces: the record ports of package stream (Subscriber, Publisher)
// and its own (FieldReader, RulesSource, PinLookup, in ports.go), so it can
// be tested with in-memory fakes (package stream/streamtest) and run
// against real services with the adapters in connectors/kafka.
//
// The pipeline keeps the residency invariant: an event goes only to its
// region's pinned topic or to quarantine/dead-letter; an offset is committed
// only after every event of its batch has been acknowledged at its
// destination; without a valid ruleset nothing is fetched or routed.
package router
