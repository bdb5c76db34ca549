package stream

import "time"

// Header is one Kafka record header.
type Header struct {
	// Key is the header name.
	Key string
	// Value is the header value, as raw bytes.
	Value []byte
}

// Message is one Kafka record, independent of the client library.
type Message struct {
	// Topic is the topic the record was read from, or is to be written to.
	Topic string
	// Partition is the partition it was read from; ignored when publishing
	// (the publisher picks the partition from the key).
	Partition int
	// Offset is its offset in the partition; ignored when publishing.
	Offset int64
	// HighWaterMark is the partition's high-water mark when the record was
	// fetched (0 if unknown); used for the consumer-lag gauge.
	HighWaterMark int64
	// Key is the record key.
	Key []byte
	// Value is the record value (the encoded event).
	Value []byte
	// Headers are the record headers, in order.
	Headers []Header
	// Time is the record timestamp (when it was produced).
	Time time.Time
}
