package kafka

import "sync/atomic"

// Balancer picks the partition of a record from its key. Records with
// equal keys must get equal partitions (for a given partition count): the
// per-key order the router promises rests on it.
type Balancer interface {
	// Partition returns the partition, in [0, partitions), of a record
	// with key (nil: the record has no key). partitions is at least 1.
	Partition(key []byte, partitions int) int
}

// HashBalancer is kafka-go's Hash balancer (the FNV-1a hash of the key
// modulo the partition count, as sarama's hash partitioner; records
// without a key round robin), so that a key lands on the partition
// kafka-go's Writer and connectors/kafka.Writer put it on. An empty key is
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
