package kafka

import (
	"context"
	"net"
)

// DialVia makes every connection of the consumer (fetches, the group
// coordinator) go to addr instead of the broker's address: a test proxy in
// front of a single-broker cluster.
func DialVia(cfg *ConsumerConfig, addr string) {
	cfg.dial = viaDial(addr)
}

func viaDial(addr string) dialFunc {
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// ProducerDialVia makes every connection of the producer go to addr.
func ProducerDialVia(cfg *ProducerConfig, addr string) {
	cfg.dial = viaDial(addr)
}

// ProducerStats returns how many batches the producer resent and how
// often it bumped its epoch.
func ProducerStats(p *Producer) (retries, bumps int64) {
	return p.retries.Load(), p.bumps.Load()
}
