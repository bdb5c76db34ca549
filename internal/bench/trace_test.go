package bench

import (
	"context"
	"errors"
	"testing"

	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
)

// checkingProducer is an AsyncProducer that copies its records and checks
// topics with err.
type checkingProducer struct{ err error }

func (checkingProducer) Produce(_ context.Context, _ []stream.Message, done func(router.ProduceAck)) error {
	done(router.ProduceAck{})
	return nil
}
func (checkingProducer) CopiesRecords() bool { return true }
func (checkingProducer) Err() error          { return nil }
func (p checkingProducer) CheckTopics(context.Context, []string) error {
	return p.err
}

// plainProducer can neither copy nor check.
type plainProducer struct{}

func (plainProducer) Produce(_ context.Context, _ []stream.Message, done func(router.ProduceAck)) error {
	done(router.ProduceAck{})
	return nil
}
func (plainProducer) Err() error { return nil }

// TestTracedProducerPassesPorts: the tracing wrapper says what the producer
// it wraps says about copying and about missing topics, so a traced router
// behaves as route does.
func TestTracedProducerPassesPorts(t *testing.T) {
	missing := &router.MissingTopicError{Topic: "bench.eu"}
	var p router.AsyncProducer = &tracedProducer{AsyncProducer: checkingProducer{err: missing}, t: &stageTrace{}}
	tc, ok := p.(router.TopicChecker)
	if !ok {
		t.Fatal("the traced producer is not a TopicChecker")
	}
	if err := tc.CheckTopics(context.Background(), []string{"bench.eu"}); !errors.Is(err, router.ErrTopicMissing) {
		t.Errorf("CheckTopics = %v, want the wrapped producer's missing topic", err)
	}
	if !p.(router.RecordCopier).CopiesRecords() {
		t.Error("CopiesRecords = false over a producer that copies")
	}
	plain := &tracedProducer{AsyncProducer: plainProducer{}, t: &stageTrace{}}
	if err := plain.CheckTopics(context.Background(), []string{"x"}); err != nil {
		t.Errorf("CheckTopics over a producer that cannot check = %v, want nil", err)
	}
	if plain.CopiesRecords() {
		t.Error("CopiesRecords = true over a producer that does not copy")
	}
}
