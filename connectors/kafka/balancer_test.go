package kafka

import (
	"encoding/hex"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

// javaMurmur2 are values computed by the Java client itself (kafka-clients
// 4.1.1): Utils.murmur2(key) and BuiltInPartitioner.partitionForKey(key, n)
// for n = 1, 3, 6, 12 and 100, keys as UTF-8. Regenerate with jshell:
//
//	jshell --class-path kafka-clients-4.1.1.jar:slf4j-api-1.7.36.jar
//	byte[] b = "user-1".getBytes(java.nio.charset.StandardCharsets.UTF_8);
//	org.apache.kafka.common.utils.Utils.murmur2(b)
//	org.apache.kafka.clients.producer.internals.BuiltInPartitioner.partitionForKey(b, 6)
var javaMurmur2 = []struct {
	key   string
	hash  int32
	parts [5]int // partitions of 1, 3, 6, 12, 100
}{
	{"", 275646681, [5]int{0, 0, 3, 9, 81}},
	{"a", -1563381124, [5]int{0, 1, 4, 4, 24}},
	{"ab", 316155434, [5]int{0, 2, 2, 2, 34}},
	{"abc", 479470107, [5]int{0, 0, 3, 3, 7}},
	{"abcd", -1323649548, [5]int{0, 2, 2, 8, 0}},
	{"abcde", 461995741, [5]int{0, 1, 1, 1, 41}},
	{"user-1", 1404122828, [5]int{0, 2, 2, 8, 28}},
	{"user-42", 1459644460, [5]int{0, 1, 4, 4, 60}},
	{"u-1", -766518409, [5]int{0, 1, 1, 7, 39}},
	{"21", -973932308, [5]int{0, 0, 0, 0, 40}},
	{"kafka", -798503068, [5]int{0, 1, 4, 4, 80}},
	{"residency", -688185760, [5]int{0, 1, 4, 4, 88}},
	{"The quick brown fox jumps over the lazy dog", 495243318, [5]int{0, 0, 0, 6, 18}},
	{"été", -2101193575, [5]int{0, 1, 1, 1, 73}},
	{"0123456789abcdef", 1438427052, [5]int{0, 0, 0, 0, 52}},
}

var javaPartitionCounts = [5]int{1, 3, 6, 12, 100}

// javaMurmur2Bytes are keys that are not text (bytes with the high bit set,
// zeros, every tail length), with Java's murmur2 and partitionForKey(key, 7).
var javaMurmur2Bytes = []struct {
	hex  string
	hash int32
	part int
}{
	{"ff", -311467685, 5},
	{"8000", -747627646, 6},
	{"fffefd", 998637092, 5},
	{"00000000", 850957120, 6},
	{"deadbeef01", -306773845, 2},
}

// TestMurmur2MatchesJava: the hash and the partition of every key are the
// Java client's, byte for byte, negative hashes included (made positive by
// clearing the sign bit, not by an absolute value: for "abcd" of 100
// partitions the two differ, 0 against 48).
func TestMurmur2MatchesJava(t *testing.T) {
	var b Murmur2Balancer
	for _, v := range javaMurmur2 {
		if got := int32(Murmur2([]byte(v.key))); got != v.hash {
			t.Errorf("murmur2(%q) = %d, Java %d", v.key, got, v.hash)
		}
		for i, n := range javaPartitionCounts {
			if got := b.Partition([]byte(v.key), n); got != v.parts[i] {
				t.Errorf("partition of %q of %d: %d, Java %d", v.key, n, got, v.parts[i])
			}
		}
	}
	for _, v := range javaMurmur2Bytes {
		key, _ := hex.DecodeString(v.hex)
		if got := int32(Murmur2(key)); got != v.hash {
			t.Errorf("murmur2(%s) = %d, Java %d", v.hex, got, v.hash)
		}
		if got := b.Partition(key, 7); got != v.part {
			t.Errorf("partition of %s of 7: %d, Java %d", v.hex, got, v.part)
		}
	}
	// The case that tells toPositive from an absolute value.
	h := int32(Murmur2([]byte("abcd")))
	if abs := -int(h) % 100; abs == b.Partition([]byte("abcd"), 100) {
		t.Fatalf("abs(%d) %% 100 = %d equals the partition: the test no longer tells them apart", h, abs)
	}
}

// TestBalancersKeylessRoundRobin: records without a key (nil) spread over
// every partition in turn; an empty key is a key, always on one partition.
func TestBalancersKeylessRoundRobin(t *testing.T) {
	for name, b := range map[string]Balancer{"murmur2": &Murmur2Balancer{}, "fnv1a": &HashBalancer{}} {
		seen := map[int]int{}
		for range 12 {
			seen[b.Partition(nil, 4)]++
		}
		if len(seen) != 4 || seen[0] != 3 || seen[3] != 3 {
			t.Errorf("%s: keyless records of 4 partitions went to %v, want 3 to each", name, seen)
		}
		empty := b.Partition([]byte{}, 4)
		for range 5 {
			if p := b.Partition([]byte{}, 4); p != empty {
				t.Errorf("%s: the empty key went to %d and %d", name, empty, p)
			}
		}
		if got := b.Partition([]byte("k"), 1); got != 0 {
			t.Errorf("%s: one partition: %d", name, got)
		}
	}
}

// TestNewBalancer: the config names, murmur2 by default; anything else is
// an error naming the field.
func TestNewBalancer(t *testing.T) {
	for name, want := range map[string]Balancer{"": &Murmur2Balancer{}, "murmur2": &Murmur2Balancer{}, "MURMUR2": &Murmur2Balancer{}, "fnv1a": &HashBalancer{}} {
		b, err := NewBalancer(name)
		if err != nil {
			t.Fatalf("NewBalancer(%q): %v", name, err)
		}
		if got, w := typeName(b), typeName(want); got != w {
			t.Errorf("NewBalancer(%q) = %s, want %s", name, got, w)
		}
	}
	if _, err := NewBalancer("crc32"); err == nil || !strings.Contains(err.Error(), `partitioner: "crc32" is not murmur2 or fnv1a`) {
		t.Errorf("NewBalancer(crc32) = %v", err)
	}
	// fnv1a is kafka-go's Hash, key for key.
	var h HashBalancer
	var kh kafka.Hash
	for i := range 100 {
		key := []byte{byte(i), 'x', byte(i * 7)}
		if got, want := h.Partition(key, 6), kh.Balance(kafka.Message{Key: key}, 0, 1, 2, 3, 4, 5); got != want {
			t.Fatalf("fnv1a of %x: %d, kafka-go %d", key, got, want)
		}
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *Murmur2Balancer:
		return "murmur2"
	case *HashBalancer:
		return "fnv1a"
	}
	return "?"
}
