// Package redis holds the Redis adapters of residency, each implementing a
// port owned by the package that uses it: the ruleset history and per-user
// pins (Rules: rules.History and rules.PinStore), and replay checkpoints
// (Checkpoints: replay.Checkpoints). NewClient is the one place a go-redis
// client is built from the `redis` section of the config. No other package
// of the module imports go-redis.
package redis
