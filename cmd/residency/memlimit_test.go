package main

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

// TestMemoryLimitSources: router.memory_limit wins, then GOMEMLIMIT (left
// to the runtime), then 90% of the container's cgroup limit (v2 of the
// process's cgroup, v2 at the root, v1) less the binary's resident pages,
// then none.
func TestMemoryLimitSources(t *testing.T) {
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(name string) ([]byte, error) {
			if v, ok := m[name]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	noEnv := func(string) (string, bool) { return "", false }
	env := func(k string) (string, bool) { return "120MiB", k == "GOMEMLIMIT" }
	v2 := map[string]string{"/proc/self/cgroup": "0::/kubepods/pod1/c1\n", "/sys/fs/cgroup/kubepods/pod1/c1/memory.max": "209715200\n"}
	for _, tc := range []struct {
		name       string
		configured int64
		env        func(string) (string, bool)
		files      map[string]string
		want       int64
		from       string
	}{
		{"config", 100 << 20, env, v2, 100 << 20, memLimitConfig},
		{"env", 0, env, v2, 0, memLimitEnv},
		{"cgroup v2 of the process", 0, noEnv, v2, 188743680, memLimitContainer},
		{"cgroup v2 at the root", 0, noEnv, map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "104857600"}, 94371840, memLimitContainer},
		{"cgroup v2 unlimited", 0, noEnv, map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "max\n"}, 0, memLimitNone},
		{"cgroup v1", 0, noEnv, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "536870912\n"}, 483183820, memLimitContainer},
		{"cgroup v2 less the binary's pages", 0, noEnv, map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "104857600",
			"/proc/self/status": "Name:\tresidency\nRssAnon:\t    4420 kB\nRssFile:\t   25600 kB\nRssShmem:\t       0 kB\n"}, 70778880, memLimitContainer},
		{"a container hardly larger than the binary", 0, noEnv, map[string]string{"/proc/self/cgroup": "0::/\n", "/sys/fs/cgroup/memory.max": "41943040",
			"/proc/self/status": "RssFile:\t   25600 kB\n"}, 18874368, memLimitContainer},
		{"cgroup v1 unlimited", 0, noEnv, map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0, memLimitNone},
		{"nothing", 0, noEnv, nil, 0, memLimitNone},
	} {
		got, from := memoryLimit(tc.configured, tc.env, files(tc.files))
		if got != tc.want || from != tc.from {
			t.Errorf("%s: memoryLimit = %d from %s, want %d from %s", tc.name, got, from, tc.want, tc.from)
		}
	}
}

// onePagePins is a rules.PinStore of a few pins in one page.
type onePagePins struct{ pins []rules.Pin }

func (s onePagePins) CountPins(context.Context) (int, error) { return len(s.pins), nil }
func (s onePagePins) ScanPins(context.Context, uint64, int) ([]rules.Pin, uint64, error) {
	return s.pins, 0, nil
}
func (s onePagePins) LookupPins(_ context.Context, ids [][]byte) ([]string, error) {
	return make([]string, len(ids)), nil
}
func (s onePagePins) WatchPins(ctx context.Context) <-chan rules.PinEvent {
	c := make(chan rules.PinEvent, 1)
	c <- rules.PinEvent{Kind: rules.PinsSubscribed}
	return c
}

// TestLowerLimitForPins: a limit taken from the container is lowered by the
// pin set's memory (held outside the heap) once the pins are loaded, never
// below half; a limit the operator set is left alone.
func TestLowerLimitForPins(t *testing.T) {
	if got := limitLessPins(100<<20, 30<<20); got != 70<<20 {
		t.Fatalf("limitLessPins = %d, want 70 MiB", got)
	}
	if got := limitLessPins(100<<20, 80<<20); got != 50<<20 {
		t.Fatalf("limitLessPins = %d, want half the limit", got)
	}
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	store := onePagePins{}
	for i := range 5000 {
		store.pins = append(store.pins, rules.Pin{UserID: fmt.Sprint("user-", i), Jurisdiction: "EU"})
	}
	log := slog.New(slog.DiscardHandler)
	for _, from := range []string{memLimitConfig, memLimitEnv, memLimitContainer} {
		const limit = 512 << 20
		debug.SetMemoryLimit(limit)
		ctx, cancel := context.WithCancel(context.Background())
		pins := rules.NewPins(store, rules.PinsOptions{})
		var wg sync.WaitGroup
		wg.Go(func() { _ = pins.Run(ctx) })
		wg.Go(func() { lowerLimitForPins(ctx, limit, from, pins, log, time.Hour) })
		<-pins.Loaded()
		if runtime.GOOS == "linux" && pins.MappedBytes() <= 0 {
			t.Errorf("from %s: no pin bytes mapped outside the heap on Linux", from)
		}
		want := int64(limit)
		if from == memLimitContainer {
			want = limit - int64(pins.MappedBytes())
		}
		testenv.Eventually(t, 10*time.Second, "the limit less the pins", func() bool { return debug.SetMemoryLimit(-1) == want })
		if pins.Bytes() <= 0 {
			t.Errorf("from %s: %d bytes of pins", from, pins.Bytes())
		}
		cancel()
		wg.Wait()
	}
}

// growingPins is a pin store whose pin set a test replaces.
type growingPins struct {
	mu   sync.Mutex
	pins []rules.Pin
}

func (s *growingPins) set(n int) {
	pins := make([]rules.Pin, n)
	for i := range pins {
		pins[i] = rules.Pin{UserID: fmt.Sprint("user-", i), Jurisdiction: "EU"}
	}
	s.mu.Lock()
	s.pins = pins
	s.mu.Unlock()
}

func (s *growingPins) CountPins(context.Context) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pins), nil
}

func (s *growingPins) ScanPins(context.Context, uint64, int) ([]rules.Pin, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pins, 0, nil
}

func (s *growingPins) LookupPins(_ context.Context, ids [][]byte) ([]string, error) {
	return make([]string, len(ids)), nil
}

func (s *growingPins) WatchPins(ctx context.Context) <-chan rules.PinEvent {
	c := make(chan rules.PinEvent, 1)
	c <- rules.PinEvent{Kind: rules.PinsSubscribed}
	return c
}

// TestLimitFollowsPins: when a later resync builds a larger pin table,
// the limit taken from the container is lowered again by the new table's
// mapped bytes; when the table shrinks, it rises again.
func TestLimitFollowsPins(t *testing.T) {
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	const limit = 1 << 30
	debug.SetMemoryLimit(limit)
	store := &growingPins{}
	store.set(1000)
	ctx, cancel := context.WithCancel(context.Background())
	pins := rules.NewPins(store, rules.PinsOptions{ResyncInterval: 20 * time.Millisecond})
	var wg sync.WaitGroup
	wg.Go(func() { _ = pins.Run(ctx) })
	wg.Go(func() {
		lowerLimitForPins(ctx, limit, memLimitContainer, pins, slog.New(slog.DiscardHandler), 10*time.Millisecond)
	})
	defer func() { cancel(); wg.Wait() }()
	<-pins.Loaded()
	small := pins.MappedBytes()
	if runtime.GOOS != "linux" { // the table stays in the heap: the limit is left alone
		store.set(200_000)
		time.Sleep(100 * time.Millisecond)
		if got := debug.SetMemoryLimit(-1); small != 0 || got != limit {
			t.Fatalf("limit %d with %d pin bytes mapped off Linux, want %d and 0", got, small, limit)
		}
		return
	}
	testenv.Eventually(t, 10*time.Second, "the limit less the first table", func() bool { return debug.SetMemoryLimit(-1) == limit-int64(small) })
	store.set(200_000)
	testenv.Eventually(t, 10*time.Second, "a larger table", func() bool { return pins.MappedBytes() > small })
	testenv.Eventually(t, 10*time.Second, "the limit less the larger table", func() bool {
		return debug.SetMemoryLimit(-1) == limit-int64(pins.MappedBytes())
	})
	if got := debug.SetMemoryLimit(-1); got >= limit-int64(small) {
		t.Fatalf("limit %d after the pins grew, want below %d", got, limit-int64(small))
	}
	store.set(1000)
	testenv.Eventually(t, 10*time.Second, "the limit back up with the smaller table", func() bool {
		return pins.MappedBytes() == small && debug.SetMemoryLimit(-1) == limit-int64(small)
	})
}
