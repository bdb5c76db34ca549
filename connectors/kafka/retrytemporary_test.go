package kafka

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestRetryTemporary: a partition's leader moving (NOT_LEADER) or not yet
// known (LEADER_NOT_AVAILABLE, right after the topic was created) is
// retried until it passes; any other error is returned at once; the
// attempts are bounded and end with ctx.
func TestRetryTemporary(t *testing.T) {
	ctx := context.Background()
	calls := 0
	v, err := retryTemporary(ctx, func() (int, error) {
		calls++
		switch calls {
		case 1:
			return 0, fmt.Errorf("offsets of t/0: %w", kafka.NotLeaderForPartition)
		case 2:
			return 0, fmt.Errorf("offsets of t/0: %w", kafka.LeaderNotAvailable)
		}
		return 42, nil
	})
	if err != nil || v != 42 || calls != 3 {
		t.Fatalf("temporary errors: got %d, %v after %d calls; want 42, nil after 3", v, err, calls)
	}

	calls = 0
	bad := fmt.Errorf("offsets of t/0: %w", kafka.TopicAuthorizationFailed)
	if _, err := retryTemporary(ctx, func() (int, error) { calls++; return 0, bad }); !errors.Is(err, kafka.TopicAuthorizationFailed) || calls != 1 {
		t.Fatalf("a lasting error: %v after %d calls; want it at once", err, calls)
	}

	calls = 0
	plain := errors.New("connection refused")
	if _, err := retryTemporary(ctx, func() (int, error) { calls++; return 0, plain }); err != plain || calls != 1 {
		t.Fatalf("a non-Kafka error: %v after %d calls; want it at once", err, calls)
	}

	calls = 0
	if _, err := retryTemporary(ctx, func() (int, error) { calls++; return 0, kafka.NotLeaderForPartition }); !errors.Is(err, kafka.NotLeaderForPartition) || calls != temporaryAttempts {
		t.Fatalf("a leader that never settles: %v after %d calls; want the error after %d", err, calls, temporaryAttempts)
	}

	calls = 0
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := retryTemporary(cctx, func() (int, error) { calls++; return 0, kafka.NotLeaderForPartition }); !errors.Is(err, kafka.NotLeaderForPartition) || calls != 1 {
		t.Fatalf("ctx ended: %v after %d calls; want the error after 1", err, calls)
	}
}
