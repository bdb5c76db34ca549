// Package embedded runs an in-process stand-in for the services residency
// needs: two independent Kafka-protocol clusters (franz-go's kfake) and a
// Redis (miniredis). It serves `residency demo`, users trying the router with
// nothing installed, and a quick `go test` without services.
//
// It is not Apache Kafka or Redis: it implements their protocols well enough
// for the router, not their durability. Tests that must hold against the real
// services get them from internal/testenv under `make test`.
package embedded

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Stack is a running embedded stack. Close it when done.
type Stack struct {
	// Ingest is the cluster holding the ingest, quarantine and dead-letter
	// topics (and the pinned topics of regions that share it).
	Ingest *kfake.Cluster
	// Remote is a second, independent cluster for regions that live apart.
	Remote *kfake.Cluster
	// Redis is the in-process Redis.
	Redis *miniredis.Miniredis
}

// Options tune Start. The zero value is ready to use.
type Options struct {
	// Partitions is the default partition count of auto-created topics.
	// Default 3.
	Partitions int
}

// Start starts both clusters and Redis on ephemeral loopback ports.
func Start(opts Options) (*Stack, error) {
	if opts.Partitions <= 0 {
		opts.Partitions = 3
	}
	newCluster := func(id string) (*kfake.Cluster, error) {
		return kfake.NewCluster(
			kfake.NumBrokers(1),
			kfake.ClusterID(id),
			kfake.DefaultNumPartitions(opts.Partitions),
			kfake.AllowAutoTopicCreation(),
		)
	}
	s := &Stack{}
	var err error
	if s.Ingest, err = newCluster("residency-ingest"); err != nil {
		return nil, fmt.Errorf("embedded: ingest cluster: %w", err)
	}
	if s.Remote, err = newCluster("residency-remote"); err != nil {
		s.Close()
		return nil, fmt.Errorf("embedded: remote cluster: %w", err)
	}
	if s.Redis, err = miniredis.Run(); err != nil {
		s.Close()
		return nil, fmt.Errorf("embedded: redis: %w", err)
	}
	return s, nil
}

// IngestBrokers returns the bootstrap addresses of the ingest cluster.
func (s *Stack) IngestBrokers() []string { return s.Ingest.ListenAddrs() }

// RemoteBrokers returns the bootstrap addresses of the remote cluster.
func (s *Stack) RemoteBrokers() []string { return s.Remote.ListenAddrs() }

// RedisAddr returns the host:port of the embedded Redis.
func (s *Stack) RedisAddr() string { return s.Redis.Addr() }

// Close stops everything that was started. It is safe to call twice.
func (s *Stack) Close() {
	if s == nil {
		return
	}
	if s.Ingest != nil {
		s.Ingest.Close()
		s.Ingest = nil
	}
	if s.Remote != nil {
		s.Remote.Close()
		s.Remote = nil
	}
	if s.Redis != nil {
		s.Redis.Close()
		s.Redis = nil
	}
}
