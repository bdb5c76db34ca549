package main

import (
	"flag"
	"log/slog"
	"os"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
)

// This file is how every command reaches Redis and Kafka from --config,
// exactly as the router does: one config file (config.Load: ${VAR}
// expansion, RESIDENCY_* overrides, *_file secrets), Redis through
// connectors/redis.NewClient with the redis section (ACL user, password,
// database, TLS with CA, client certificate and server name), Kafka
// through connectors/kafka with the cluster's TLS and SASL and the
// config's partitioner, compression and isolation level. Commands that
// need either (rules, explain, replay, sink, topics, and those to come:
// audit, purge, erase, residue) use these functions, not their own.

// envConfig names the environment variable with the default --config.
const envConfig = "RESIDENCY_CONFIG"

// configFlag registers --config on fs, defaulting to $RESIDENCY_CONFIG.
func configFlag(fs *flag.FlagSet) *string {
	return fs.String("config", os.Getenv(envConfig), "config `file` (default $"+envConfig+"): Redis, Kafka and the rest as the router reaches them")
}

// loadConfig reads the config file at path, lets set apply the command's
// flags over it (nil: none), and finishes it for scope (defaults, then
// every problem at once). Errors are config.ErrInvalid (exit 2).
func loadConfig(path string, scope config.Scope, set func(*config.Config)) (*config.Config, error) {
	cfg, err := config.Load(path, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	if set != nil {
		set(cfg)
	}
	if err := cfg.Finish(scope); err != nil {
		return nil, err
	}
	return cfg, nil
}

// newRedis returns a client for the config's Redis (c: its redis
// section) with readWrite as its read and write timeouts and maxRetries
// go-redis retries of a failed command (0: go-redis's default):
// connectors/redis.NewClient, as every command that reaches Redis
// through the config builds its client. Errors name the field
// (redis.tls.ca_file).
func newRedis(c redis.Config, readWrite time.Duration, maxRetries ...int) (*goredis.Client, error) {
	o := redis.ClientOptions{Timeout: readWrite}
	if len(maxRetries) > 0 {
		o.MaxRetries = maxRetries[0]
	}
	client, err := redis.NewClient(c, o)
	if err != nil {
		return nil, config.FieldError("", err)
	}
	return client, nil
}

// writerConfig is how every command writes to cluster name of the config:
// its TLS and SASL, kafka.compression and kafka.partitioner. The caller
// sets the batching.
func writerConfig(cfg *config.Config, name string) kafka.WriterConfig {
	bal, err := kafka.NewBalancer(cfg.Kafka.Partitioner)
	if err != nil { // Validate has refused it; never here
		bal = &kafka.Murmur2Balancer{}
	}
	return kafka.WriterConfig{Cluster: cfg.Kafka.Clusters[name], Compression: cfg.Kafka.Compression, Balancer: bal}
}

// producerConfig is how every command writes with the idempotent
// Producer to cluster name of the config: its TLS and SASL,
// kafka.compression and kafka.partitioner (as writerConfig).
func producerConfig(cfg *config.Config, name string) kafka.ProducerConfig {
	wc := writerConfig(cfg, name)
	return kafka.ProducerConfig{Cluster: wc.Cluster, Compression: wc.Compression, Balancer: wc.Balancer}
}

// consumerConfig is how every command joins a consumer group with the
// batch Consumer on cluster name of the config: its TLS and SASL,
// kafka.session_timeout, rebalance_timeout and isolation_level (which the
// Consumer honours, read_committed included).
func consumerConfig(cfg *config.Config, name, group string, topics []string, startOffset string) kafka.ConsumerConfig {
	return kafka.ConsumerConfig{Cluster: cfg.Kafka.Clusters[name], GroupID: group, Topics: topics, StartOffset: startOffset,
		IsolationLevel: cfg.Kafka.IsolationLevel, SessionTimeout: cfg.Kafka.SessionTimeout, RebalanceTimeout: cfg.Kafka.RebalanceTimeout}
}

// newReader joins a consumer group on cluster name of the config as every
// command does: its TLS and SASL, kafka.session_timeout,
// rebalance_timeout and isolation_level. kafka-go's reader cannot honour
// read_committed (it returns aborted transactions' records): that is a
// config error naming kafka.isolation_level, never a silent downgrade.
func newReader(cfg *config.Config, name, group string, topics []string, startOffset string, log *slog.Logger) (*kafka.Reader, error) {
	if err := readCommittedUnsupported(cfg); err != nil {
		return nil, err
	}
	r, err := kafka.NewReader(kafka.ReaderConfig{Cluster: cfg.Kafka.Clusters[name], GroupID: group, Topics: topics, StartOffset: startOffset,
		SessionTimeout: cfg.Kafka.SessionTimeout, RebalanceTimeout: cfg.Kafka.RebalanceTimeout, IsolationLevel: cfg.Kafka.IsolationLevel, Logger: log})
	if err != nil {
		return nil, config.ClusterError(name, err)
	}
	return r, nil
}

// readCommittedUnsupported is the error of a command reading with
// kafka-go's consumer-group reader (sink) when kafka.isolation_level is
// read_committed: it stops at the last stable offset but returns the
// records of aborted transactions, so the command refuses rather than
// handle what a producer aborted. (The range reader of replay and audit
// verify honours read_committed.)
func readCommittedUnsupported(cfg *config.Config) error {
	if !strings.EqualFold(cfg.Kafka.IsolationLevel, "read_committed") {
		return nil
	}
	return &config.Error{File: cfg.File(), Problems: []config.Problem{{Field: "kafka.isolation_level",
		Message: "read_committed is not supported by this command yet: it reads with kafka-go's reader, which returns the records of aborted transactions (the batch consumer of connectors/kafka supports it)"}}}
}

// newAdmin returns an Admin of cluster name of the config (its TLS and
// SASL). Errors name the field (kafka.clusters.NAME...).
func newAdmin(cfg *config.Config, name string) (*kafka.Admin, error) {
	a, err := kafka.NewAdmin(cfg.Kafka.Clusters[name])
	if err != nil {
		return nil, config.ClusterError(name, err)
	}
	return a, nil
}
