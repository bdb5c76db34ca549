// Package stream is what every streaming part of residency shares,
// independent of any Kafka client library: a record (Message, Header), the
// ports through which the router, the sink and replay read and write records
// (Subscriber, Publisher, GroupMember), and the one retry policy they all
// retry transient failures with (Retry).
//
// Adapters to a real cluster live in connectors/kafka; an in-memory broker
// and the conformance suite every adapter must pass live in
// stream/streamtest. This package imports no other package of the module.
package stream
