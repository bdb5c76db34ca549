// Command probe waits until each Kafka bootstrap address answers a metadata
// request, then prints what it found. deploy/dev/up uses it to know the
// brokers are ready, not just listening.
//
// Usage: go run ./deploy/dev/probe [-timeout 120s] HOST:PORT...
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/segmentio/kafka-go"
)

func main() {
	timeout := flag.Duration("timeout", 2*time.Minute, "how long to wait for every address")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	for _, addr := range flag.Args() {
		md, err := waitMetadata(ctx, addr)
		if err != nil {
			fmt.Fprintf(os.Stderr, "probe: kafka at %s: %v\n", addr, err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "probe: kafka at %s answers: cluster %s, controller %d, %d broker(s)\n",
			addr, md.ClusterID, md.Controller.ID, len(md.Brokers))
	}
}

func waitMetadata(ctx context.Context, addr string) (*kafka.MetadataResponse, error) {
	c := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 5 * time.Second}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) > 0 && md.Controller.ID >= 0 {
			return md, nil
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return nil, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}
