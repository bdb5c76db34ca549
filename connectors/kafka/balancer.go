package kafka

import (
	"fmt"
	"strings"
	"sync/atomic"
)

// Balancer picks the partition of a record from its key. Records with
// equal keys must get equal partitions (for a given partition count): the
// per-key order the router promises rests on it.
type Balancer interface {
	// Partition returns the partition, in [0, partitions), of a record
	// with key (nil: the record has no key). partitions is at least 1.
	Partition(key []byte, partitions int) int
}

// The partitioners a Writer or Producer can use, by their config name
// (kafka.partitioner).
const (
	// PartitionerMurmur2 is the Java client's partitioner (Murmur2Balancer),
	// the default.
	PartitionerMurmur2 = "murmur2"
	// PartitionerFNV1a is kafka-go's Hash balancer (HashBalancer), the
	// partitioner of residency before murmur2 became the default.
	PartitionerFNV1a = "fnv1a"
)

// DefaultPartitioner is kafka.partitioner's default: the Java client's,
// so Kafka Streams, ksqlDB and Java producers put a key on the partition
// residency puts it on.
const DefaultPartitioner = PartitionerMurmur2

// NewBalancer returns the balancer of a partitioner name: "murmur2" (also
// the default, for "") or "fnv1a". Each call returns a new balancer (its
// round robin of keyless records is its own).
func NewBalancer(partitioner string) (Balancer, error) {
	switch strings.ToLower(partitioner) {
	case "", PartitionerMurmur2:
		return &Murmur2Balancer{}, nil
	case PartitionerFNV1a:
		return &HashBalancer{}, nil
	}
	return nil, fmt.Errorf("%w: partitioner: %q is not murmur2 or fnv1a", ErrConfig, partitioner)
}

// Murmur2Balancer is the Java client's partitioner for records with a key
// (org.apache.kafka.clients.producer.internals.BuiltInPartitioner
// .partitionForKey, as the DefaultPartitioner before it): the 32-bit
// murmur2 hash of the key bytes (seed 0x9747b28c), made positive by
// clearing its sign bit (Utils.toPositive, not an absolute value), modulo
// the partition count. Kafka Streams, ksqlDB, the Java producer, librdkafka's
// murmur2_random and franz-go's default partitioner place keys the same
// way, so they and residency agree on the partition of every key. An
// empty key is a key (its hash); records without a key (nil) round robin:
// the Java client spreads them with its sticky partitioner, and neither
// promises anything about where a keyless record lands.
type Murmur2Balancer struct {
	rr atomic.Uint32
}

// Partition implements Balancer.
func (b *Murmur2Balancer) Partition(key []byte, partitions int) int {
	if key == nil {
		return int((b.rr.Add(1) - 1) % uint32(partitions))
	}
	return int(int32(Murmur2(key)&0x7fffffff) % int32(partitions))
}

// Murmur2 is the Java client's murmur2 hash of data
// (org.apache.kafka.common.utils.Utils.murmur2), as an unsigned 32-bit
// value: int32(Murmur2(k)) is what Java returns.
func Murmur2(data []byte) uint32 {
	const (
		seed = 0x9747b28c
		m    = 0x5bd1e995
		r    = 24
	)
	n := len(data)
	h := uint32(seed) ^ uint32(n)
	i := 0
	for ; i+4 <= n; i += 4 {
		k := uint32(data[i]) | uint32(data[i+1])<<8 | uint32(data[i+2])<<16 | uint32(data[i+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch n - i {
	case 3:
		h ^= uint32(data[i+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[i+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[i])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// HashBalancer is kafka-go's Hash balancer (the FNV-1a hash of the key
// modulo the partition count, as sarama's hash partitioner; records
// without a key round robin), residency's partitioner before murmur2
// became the default (kafka.partitioner: fnv1a keeps it). An empty key is
// a key (its hash), not a missing one.
type HashBalancer struct {
	rr atomic.Uint32
}

// Partition implements Balancer.
func (h *HashBalancer) Partition(key []byte, partitions int) int {
	if key == nil {
		return int((h.rr.Add(1) - 1) % uint32(partitions))
	}
	const offset32, prime32 = 2166136261, 16777619
	sum := uint32(offset32)
	for _, c := range key {
		sum ^= uint32(c)
		sum *= prime32
	}
	p := int32(sum) % int32(partitions)
	if p < 0 {
		p = -p
	}
	return int(p)
}
