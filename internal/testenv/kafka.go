package testenv

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Kafka is a Kafka cluster a test may create topics on.
type Kafka struct {
	// Name is "a" (the ingest cluster) or "b" (the second cluster).
	Name string
	// Brokers are the bootstrap addresses.
	Brokers []string
	// Real is true for Apache Kafka from the dev stack, false for kfake.
	Real bool
	// Version is the Apache Kafka version when Real, "kfake" otherwise.
	Version string
}

// KafkaA returns the first Kafka cluster: the one holding ingest, quarantine
// and dead-letter topics in the router's tests.
func KafkaA(t testing.TB) *Kafka { t.Helper(); return kafkaCluster(t, "a", EnvKafkaA) }

// KafkaB returns the second Kafka cluster, independent of KafkaA, for regions
// whose pinned topics live on another cluster.
func KafkaB(t testing.TB) *Kafka { t.Helper(); return kafkaCluster(t, "b", EnvKafkaB) }

func kafkaCluster(t testing.TB, name, env string) *Kafka {
	t.Helper()
	if addr, ok := lookup(env); ok {
		brokers := strings.Split(addr, ",")
		if err := dialAny(brokers); err != nil {
			t.Fatalf("testenv: Kafka cluster %s (%s=%s) does not answer: %v; %s", name, env, addr, err, startHint)
		}
		v := strings.TrimSpace(lookupOr(EnvKafkaVersion, "unknown"))
		return &Kafka{Name: name, Brokers: brokers, Real: true, Version: v}
	}
	missing(t, env, "Kafka cluster "+name)
	s := embeddedStack(t)
	brokers := s.IngestBrokers()
	if name == "b" {
		brokers = s.RemoteBrokers()
	}
	return &Kafka{Name: name, Brokers: brokers, Version: "kfake"}
}

// Topic creates a topic with a unique name derived from prefix and the test,
// with the given number of partitions, and returns its name. The topic is
// deleted when the test ends.
func (k *Kafka) Topic(t testing.TB, prefix string, partitions int) string {
	t.Helper()
	name := Name(t, prefix)
	k.CreateTopic(t, name, partitions)
	return name
}

// CreateTopic creates the named topic (replication factor 1) and waits until
// every partition has a leader. The topic is deleted when the test ends.
func (k *Kafka) CreateTopic(t testing.TB, name string, partitions int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := CreateTopics(ctx, k.Brokers, partitions, name); err != nil {
		t.Fatalf("testenv: create topic %s on cluster %s: %v", name, k.Name, err)
	}
	k.DeleteAfter(t, name)
}

// DeleteAfter deletes the named topics (those that exist) when the test
// ends: for topics the code under test creates.
func (k *Kafka) DeleteAfter(t testing.TB, names ...string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 10 * time.Second}
		_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: names})
	})
}

// CreateTopics creates topics with the given partition count (replication
// factor 1) on the cluster at brokers, ignoring topics that already exist,
// and waits until every partition has a leader.
func CreateTopics(ctx context.Context, brokers []string, partitions int, names ...string) error {
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, n := range names {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: n, NumPartitions: partitions, ReplicationFactor: 1})
	}
	resp, err := c.CreateTopics(ctx, req)
	if err != nil {
		return errorf("create topics: %w", err)
	}
	for n, e := range resp.Errors {
		if e != nil && !errors.Is(e, kafka.TopicAlreadyExists) {
			return errorf("create topic %s: %w", n, e)
		}
	}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: names})
		if err == nil && allLed(md, names, partitions) && allServed(ctx, c, names, partitions) {
			return nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return errorf("wait for topic leaders: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func allLed(md *kafka.MetadataResponse, names []string, partitions int) bool {
	found := 0
	for _, tp := range md.Topics {
		if tp.Error != nil || len(tp.Partitions) < partitions {
			return false
		}
		for _, p := range tp.Partitions {
			if p.Error != nil || p.Leader.Host == "" {
				return false
			}
		}
		found++
	}
	return found == len(names)
}

// allServed reports whether the leader of every partition answers a
// ListOffsets request: a broker names itself leader in the metadata a
// moment before it serves the partition (NotLeaderForPartition meanwhile),
// and the code under test may list offsets first thing.
func allServed(ctx context.Context, c *kafka.Client, names []string, partitions int) bool {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, n := range names {
		for p := range partitions {
			req.Topics[n] = append(req.Topics[n], kafka.FirstOffsetOf(p))
		}
	}
	resp, err := c.ListOffsets(ctx, req)
	if err != nil {
		return false
	}
	for _, n := range names {
		if len(resp.Topics[n]) < partitions {
			return false
		}
		for _, po := range resp.Topics[n] {
			if po.Error != nil {
				return false
			}
		}
	}
	return true
}

func dialAny(addrs []string) error {
	var last error
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 3*time.Second)
		if err == nil {
			return c.Close()
		}
		last = err
	}
	return last
}

func lookupOr(env, def string) string {
	if v, ok := lookup(env); ok {
		return v
	}
	return def
}
