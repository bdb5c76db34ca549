package routertest

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/residency-router/residency/router"
)

func TestMemoryConformance(t *testing.T) {
	b := NewBroker()
	var n atomic.Int64
	TestPubSub(t, Harness{
		NewTopic: func(t *testing.T, partitions int) string {
			name := fmt.Sprintf("topic-%d", n.Add(1))
			b.CreateTopic(name, partitions)
			return name
		},
		NewPublisher: func(t *testing.T) router.Publisher { return b.Publisher() },
		NewSubscriber: func(t *testing.T, group string, topics ...string) (router.Subscriber, func()) {
			s := b.Subscriber(group, topics...)
			return s, func() { _ = s.Close() }
		},
		NewGroup: func(t *testing.T) string { return fmt.Sprintf("group-%d", n.Add(1)) },
	})
}
