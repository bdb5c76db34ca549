// Package bench is the harness of `residency bench`: it measures what
// routing costs over moving the bytes, running the real router, a plain
// kafka-go pass-through and a franz-go pass-through (the reference for what
// a Go client moves on the broker; and, with Options.Diagnose, two
// diagnostic contenders) against the same brokers, each in a child process
// of the residency binary (RunChild) unless Options.InProcess, and checks
// the results against the targets of issue 16 (Report.Targets). The sample
// events come from internal/sample. It imports no testing code.
package bench

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/residency-router/residency/connectors/kafka"
	redisconn "github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/embedded"
	"github.com/residency-router/residency/internal/sample"
)

// Options configure a bench run: the flags of `residency bench`, which
// gives each its default.
type Options struct {
	// Brokers are the bootstrap addresses of the Kafka cluster. Default:
	// none, start the embedded stack.
	Brokers []string
	// Remote are those of a second cluster for the EU and UK pinned topics
	// (with the embedded stack, any value uses its second cluster).
	// Default: none, every region on Brokers.
	Remote []string
	// Events is how many events are preloaded and routed in the throughput
	// pass. At least 100.
	Events int
	// Partitions of every topic. At least 1.
	Partitions int
	// Replication is the replication factor of every topic. At least 1.
	Replication int
	// BatchSize is the events per batch of both contenders. At least 1.
	BatchSize int
	// Linger is how long a batch waits for more events, both contenders.
	Linger time.Duration
	// Rate is the offered rate of the latency pass in events/s; 0: half
	// the router's own events/s in the throughput pass.
	Rate float64
	// LatencyFor is how long the latency pass produces timed events, per
	// contender.
	LatencyFor time.Duration
	// LatencyWarmup is how long the latency pass first produces at the
	// offered rate without timing (0: no warm-up at rate).
	LatencyWarmup time.Duration
	// LatencyPasses is the latency passes per contender, in the order
	// A B B A ...
	LatencyPasses int
	// Rounds is the throughput rounds; each runs every contender,
	// alternating which goes first.
	Rounds int
	// InProcess runs the contenders in this process instead of child
	// processes (CPU and RSS then include everything else in it).
	InProcess bool
	// KeepTopics leaves the bench topics in place at the end.
	KeepTopics bool
	// Timeout bounds the whole run.
	Timeout time.Duration
	// Seed seeds the event mix.
	Seed uint64
	// CPUProfile, if set, is a directory where each contender run (child
	// processes only) writes a CPU profile.
	CPUProfile string
	// MemProfile, if set, is a directory where each contender run (child
	// processes only) writes a heap profile taken at its largest live heap
	// (NAME-heap.pprof; read it with go tool pprof -sample_index=inuse_space).
	MemProfile string
	// MaxInflightEvents is the router contenders' window in events
	// (router.max_inflight_events). Default 0: the router's default
	// (router.DefaultMaxInflightEvents).
	MaxInflightEvents int
	// RouterCompression is the compression of the router contenders'
	// produce requests ("none", "gzip", "snappy", "lz4" or "zstd"), as
	// kafka.compression sets it for route. Default "": the router's
	// default (kafka.compression's).
	RouterCompression string
	// RouterCompressionAlt, if set, adds a contender: the router with this
	// produce compression, in the same throughput rounds and latency
	// passes as the router (report: RouterAlt). Default "": none.
	RouterCompressionAlt string
	// MaxUncommittedEvents is the router contenders' settled backlog in
	// events (router.max_uncommitted_events). Default 0: the router's
	// default (router.DefaultMaxUncommittedEvents).
	MaxUncommittedEvents int
	// MaxUncommittedBytes is the router contenders' settled backlog in
	// leaf bytes (router.max_uncommitted_bytes). Default 0: the router's
	// default (router.DefaultMaxUncommittedBytes).
	MaxUncommittedBytes int
	// MemoryLimit, if set, is the Go soft memory limit (bytes) of the
	// router contenders, as router.memory_limit sets it for route (a
	// deployment in a container gets 90% of its limit by default).
	// Default 0: none, the runtime's default.
	MemoryLimit int64
	// Diagnose adds two throughput contenders: the pass-through plus the
	// router's fan-out and headers, and the pass-through with the router's
	// writer.
	Diagnose bool
	// Pins is how many per-user pins are loaded into Redis before the
	// contenders run; the router then looks its events' users up there
	// (pins on). Default 0: pins off.
	Pins int
	// Redis is the host:port of the Redis the pins go to (no password).
	// Default: the embedded stack's Redis; needed with Brokers and Pins.
	Redis string
	// AuditCompression is the compression of the router+audit contender's
	// audit topic ("none", "gzip", "snappy", "lz4", "zstd"). Default "":
	// the audit log's default (connectors/kafka.AuditLogConfig.Compression).
	AuditCompression string
	// AuditCompressionB, if set, adds a contender, router+audit-b: the
	// router with the audit on whose audit topic has this compression, in
	// every round beside router+audit, so two codecs are compared in the
	// same run. Default "": no such contender.
	AuditCompressionB string
	// Contenders, if not nil, names the contenders to run (--contenders),
	// each once, by the names the progress lines and the report give them
	// (knownContenders). Those that other options add (router+audit-b,
	// router-alt, the --diagnose pair) run only with their option, and
	// each such option needs one of its contenders named here. Ratios and
	// targets that need a contender left out are not measured. Without the
	// router, a latency pass needs Rate. Default nil: every contender.
	Contenders []string
	// BrokerPID, if set, is the process id of the broker (of Brokers) on
	// this host: the bench reads its CPU time (Linux: /proc/PID/stat)
	// over each contender's throughput span, where the contender reads its
	// own, and reports the broker's CPU per event of each contender
	// (ContenderReport.BrokerCPUMicrosPerEvent). Only the throughput
	// rounds are measured. Needs Brokers. Default 0: the broker's CPU is
	// not measured.
	BrokerPID int
}

// knownContenders are the names --contenders takes, in the order the
// report lists them.
var knownContenders = []string{contenderPassThrough, contenderFranzGo, contenderRouter, contenderRouterAudit,
	contenderRouterAuditB, contenderRouterAlt, contenderFanOut, contenderWriterPass}

// runs reports whether the run includes mode: the options that add it are
// given and Contenders, if set, names it.
func (o Options) runs(mode string) bool {
	switch mode {
	case contenderRouterAuditB:
		if o.AuditCompressionB == "" {
			return false
		}
	case contenderRouterAlt:
		if o.RouterCompressionAlt == "" {
			return false
		}
	case contenderFanOut, contenderWriterPass:
		if !o.Diagnose {
			return false
		}
	}
	return o.Contenders == nil || slices.Contains(o.Contenders, mode)
}

// throughputOrder is the order of the contenders in throughput round
// round (from 0): every other round reversed.
func (o Options) throughputOrder(round int) []string {
	order := []string{contenderPassThrough, contenderRouter, contenderRouterAudit, contenderFranzGo}
	if o.AuditCompressionB != "" {
		// Between the router and router+audit: in every round the two
		// audit contenders sit on either side of the router's run.
		order = []string{contenderPassThrough, contenderRouterAudit, contenderRouter, contenderRouterAuditB, contenderFranzGo}
	}
	if o.RouterCompressionAlt != "" {
		order = slices.Insert(order, slices.Index(order, contenderFranzGo), contenderRouterAlt)
	}
	if o.Diagnose {
		order = append(order, contenderFanOut, contenderWriterPass)
	}
	order = slices.DeleteFunc(order, func(mode string) bool { return !o.runs(mode) })
	if round%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// latencyOrder is the order of the contenders in latency pass pass (from
// 0), A B B A ...: the contenders with a latency pass (not the audit's or
// --diagnose's) that the run includes.
func (o Options) latencyOrder(pass int) []string {
	order := []string{contenderPassThrough, contenderRouter, contenderRouterAlt, contenderFranzGo}
	order = slices.DeleteFunc(order, func(mode string) bool { return !o.runs(mode) })
	if pass%2 == 1 {
		slices.Reverse(order)
	}
	return order
}

// validateContenders checks --contenders and how it agrees with the
// options that add contenders and with --rate.
func (o Options) validateContenders() error {
	if o.Contenders == nil {
		return nil
	}
	known := strings.Join(knownContenders, ", ")
	if len(o.Contenders) == 0 {
		return fmt.Errorf("--contenders: empty list (name one or more of: %s)", known)
	}
	for i, c := range o.Contenders {
		if !slices.Contains(knownContenders, c) {
			return fmt.Errorf("--contenders: unknown contender %q (known: %s)", c, known)
		}
		if slices.Contains(o.Contenders[:i], c) {
			return fmt.Errorf("--contenders: %q named twice", c)
		}
	}
	for _, f := range []struct {
		flag  string
		given bool
		adds  []string
	}{
		{"--audit-compression-b", o.AuditCompressionB != "", []string{contenderRouterAuditB}},
		{"--router-compression-alt", o.RouterCompressionAlt != "", []string{contenderRouterAlt}},
		{"--diagnose", o.Diagnose, []string{contenderFanOut, contenderWriterPass}},
	} {
		named := slices.DeleteFunc(slices.Clone(f.adds), func(c string) bool { return !slices.Contains(o.Contenders, c) })
		switch {
		case f.given && len(named) == 0:
			it := "it"
			if len(f.adds) > 1 {
				it = "one of them"
			}
			return fmt.Errorf("%s adds %s, which --contenders leaves out: name %s in --contenders or drop %s",
				f.flag, joinAnd(f.adds), it, f.flag)
		case !f.given && len(named) > 0:
			return fmt.Errorf("--contenders: %s runs only with %s", named[0], f.flag)
		}
	}
	// Flags that configure contenders without adding any: given (not
	// their zero default) with none of those contenders named, they would
	// be taken and have no effect.
	routers := []string{contenderRouter, contenderRouterAudit, contenderRouterAuditB, contenderRouterAlt}
	for _, f := range []struct {
		flag       string
		given      bool
		configures []string
	}{
		{"--audit-compression", o.AuditCompression != "", []string{contenderRouterAudit}},
		{"--router-compression", o.RouterCompression != "", routers},
		{"--pins", o.Pins > 0, routers},
		{"--max-inflight-events", o.MaxInflightEvents > 0, routers},
		{"--max-uncommitted-events", o.MaxUncommittedEvents > 0, routers},
		{"--max-uncommitted-bytes", o.MaxUncommittedBytes > 0, routers},
		{"--memory-limit", o.MemoryLimit > 0, routers},
	} {
		if f.given && !slices.ContainsFunc(f.configures, o.runs) {
			return fmt.Errorf("%s configures %s, which --contenders leaves out: name one in --contenders or drop %s",
				f.flag, joinAnd(f.configures), f.flag)
		}
	}
	if o.Rate == 0 && !o.runs(contenderRouter) && len(o.latencyOrder(0)) > 0 {
		return errors.New("--contenders leaves out router, whose events/s set the latency passes' offered rate by default: give --rate")
	}
	return nil
}

// joinAnd joins names as "a", "a and b", "a, b and c".
func joinAnd(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// codecs are the values of --audit-compression, --audit-compression-b,
// --router-compression and --router-compression-alt.
var codecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// DefaultOptions returns the defaults of `residency bench`'s flags.
func DefaultOptions() Options {
	return Options{Events: 200_000, Partitions: 6, Replication: 1, BatchSize: 500, Linger: 5 * time.Millisecond,
		LatencyFor: 10 * time.Second, LatencyWarmup: 2 * time.Second, LatencyPasses: 2, Rounds: 1,
		Timeout: 30 * time.Minute, Seed: 1}
}

// Validate reports options Run cannot use, in the flags' words.
func (o Options) Validate() error {
	if o.Events < 100 || o.Partitions < 1 || o.Replication < 1 || o.BatchSize < 1 || o.Rounds < 1 ||
		o.Rate < 0 || o.LatencyFor <= 0 || o.LatencyWarmup < 0 || o.LatencyPasses < 1 || o.Linger < 0 {
		return errors.New("--events must be at least 100; --partitions, --replication, --batch-size, --rounds and --latency-passes at least 1; " +
			"--latency-duration positive; --rate, --latency-warmup and --linger not negative")
	}
	if o.Pins < 0 || o.MemoryLimit < 0 || o.MaxInflightEvents < 0 || o.MaxUncommittedEvents < 0 || o.MaxUncommittedBytes < 0 {
		return errors.New("--pins, --memory-limit, --max-inflight-events, --max-uncommitted-events and --max-uncommitted-bytes must not be negative")
	}
	for _, c := range []struct{ flag, v string }{{"--audit-compression", o.AuditCompression}, {"--audit-compression-b", o.AuditCompressionB},
		{"--router-compression", o.RouterCompression}, {"--router-compression-alt", o.RouterCompressionAlt}} {
		if c.v != "" && !slices.Contains(codecs, c.v) {
			return fmt.Errorf("%s must be one of %s, not %q", c.flag, strings.Join(codecs, ", "), c.v)
		}
	}
	if o.Pins > 0 && len(o.Brokers) > 0 && o.Redis == "" {
		return errors.New("--pins needs --redis (the Redis to load the pins into) when --brokers is given")
	}
	if err := o.validateContenders(); err != nil {
		return err
	}
	switch {
	case o.BrokerPID < 0:
		return fmt.Errorf("--broker-pid must be a process id, not %d", o.BrokerPID)
	case o.BrokerPID > 0 && len(o.Brokers) == 0:
		return errors.New("--broker-pid needs --brokers: the embedded stack's brokers run inside the bench's own process")
	case o.BrokerPID > 0:
		return checkBrokerPID(o.BrokerPID)
	}
	return nil
}

// Report is the result of `residency bench` (its --json output).
type Report struct {
	// Target is "embedded" or the --brokers list.
	Target string `json:"target"`
	// Remote is the --remote-brokers list, if any.
	Remote     string `json:"remote,omitempty"`
	Events     int    `json:"events"`
	Partitions int    `json:"partitions"`
	BatchSize  int    `json:"batch_size"`
	Rounds     int    `json:"rounds"`
	Processes  string `json:"processes"` // "child" or "in-process"
	// MemoryLimit is --memory-limit: the router contenders' Go soft memory
	// limit in bytes (0: none).
	MemoryLimit int64 `json:"memory_limit"`
	// RouterCompression is --router-compression: the router contenders'
	// produce compression ("": the router's default).
	RouterCompression string `json:"router_compression,omitempty"`
	// RouterCompressionAlt is --router-compression-alt: RouterAlt's
	// produce compression.
	RouterCompressionAlt string  `json:"router_compression_alt,omitempty"`
	GoVersion            string  `json:"go_version"`
	Platform             string  `json:"platform"`
	CPUs                 int     `json:"cpus"`
	LoadStart            float64 `json:"load_average_start"` // 1-minute load average
	LoadEnd              float64 `json:"load_average_end"`
	// Pins is how many pins were loaded into Redis (--pins); 0: the router
	// ran with pins off.
	Pins int `json:"pins"`
	// PinnedEvents is how many preloaded events belong to a pinned user
	// (a pin, not the country, places them).
	PinnedEvents int `json:"pinned_events"`
	// Mix counts the preloaded events by kind.
	Mix map[string]int `json:"mix"`
	// Contenders is --contenders: the contenders run, in the first
	// round's order; absent when the flag was not given (every contender
	// ran).
	Contenders []string `json:"contenders,omitempty"`
	// PassThrough (kafka-go), Router and FranzGo are the three contenders
	// of every run unless --contenders leaves one out; a contender that
	// did not run has a zero report (absent from the JSON), and every
	// ratio that needs it is zero (absent from the JSON, "not measured"
	// in the table).
	PassThrough ContenderReport `json:"pass_through,omitzero"`
	Router      ContenderReport `json:"router,omitzero"`
	FranzGo     ContenderReport `json:"franz_go,omitzero"`
	// RouterAudit is the router with the audit on (throughput only).
	RouterAudit ContenderReport `json:"router_audit,omitzero"`
	// RouterAlt is the --router-compression-alt contender: the router with
	// another produce compression, in the same rounds and passes.
	RouterAlt *ContenderReport `json:"router_alt,omitempty"`
	// RouterAltToFranzGo is RouterAlt.EventsPerSecond /
	// FranzGo.EventsPerSecond, RouterAltToFranzGoRounds the same per round
	// and CPURouterAltToFranzGo RouterAlt.CPUMicrosPerEvent /
	// FranzGo.CPUMicrosPerEvent.
	RouterAltToFranzGo       float64   `json:"router_alt_to_franz_go,omitempty"`
	RouterAltToFranzGoRounds []float64 `json:"router_alt_to_franz_go_rounds,omitempty"`
	CPURouterAltToFranzGo    float64   `json:"cpu_router_alt_to_franz_go,omitempty"`
	// AuditRatio is RouterAudit.EventsPerSecond / Router.EventsPerSecond:
	// what the audit costs (issue 14 asks >= 0.9).
	AuditRatio float64 `json:"audit_ratio,omitempty"`
	// AuditRounds is AuditRatio per round.
	AuditRounds []float64 `json:"audit_rounds,omitempty"`
	// AuditCompression is router+audit's audit topic compression
	// (--audit-compression; "" the audit log's default, none).
	AuditCompression string `json:"audit_compression,omitempty"`
	// RouterAuditB is the router with the audit on and its audit topic
	// compressed with AuditCompressionB (--audit-compression-b; throughput
	// only); nil without the flag.
	RouterAuditB *ContenderReport `json:"router_audit_b,omitempty"`
	// AuditCompressionB is --audit-compression-b.
	AuditCompressionB string `json:"audit_compression_b,omitempty"`
	// AuditRatioB is RouterAuditB.EventsPerSecond / Router.EventsPerSecond.
	AuditRatioB float64 `json:"audit_ratio_b,omitempty"`
	// AuditRoundsB is AuditRatioB per round.
	AuditRoundsB []float64 `json:"audit_rounds_b,omitempty"`
	// AuditBToA is RouterAuditB.EventsPerSecond /
	// RouterAudit.EventsPerSecond (their medians over the rounds).
	AuditBToA float64 `json:"audit_b_to_a,omitempty"`
	// AuditBToARounds is RouterAuditB / RouterAudit events/s per round.
	AuditBToARounds []float64 `json:"audit_b_to_a_rounds,omitempty"`
	// FanOut is the --diagnose contender (throughput only).
	FanOut *ContenderReport `json:"fan_out,omitempty"`
	// FanOutRatio is FanOut.EventsPerSecond / PassThrough.EventsPerSecond.
	FanOutRatio float64 `json:"fan_out_ratio,omitempty"`
	// WriterPass is the other --diagnose contender: the pass-through with
	// the router's writer (throughput only).
	WriterPass *ContenderReport `json:"writer_pass,omitempty"`
	// RouterToWriterPass is Router.EventsPerSecond /
	// WriterPass.EventsPerSecond: the cost of routing on the same produce
	// path.
	RouterToWriterPass float64 `json:"router_to_writer_pass,omitempty"`
	// Ratio is Router.EventsPerSecond / PassThrough.EventsPerSecond
	// (router / kafka-go).
	Ratio float64 `json:"ratio,omitempty"`
	// RoundRatios is the same ratio per round.
	RoundRatios []float64 `json:"round_ratios,omitempty"`
	// RouterToFranzGo is Router.EventsPerSecond / FranzGo.EventsPerSecond.
	RouterToFranzGo float64 `json:"router_to_franz_go,omitempty"`
	// RouterToFranzGoRounds is the same ratio per round.
	RouterToFranzGoRounds []float64 `json:"router_to_franz_go_rounds,omitempty"`
	// CPURouterToFranzGo is Router.CPUMicrosPerEvent /
	// FranzGo.CPUMicrosPerEvent.
	CPURouterToFranzGo float64 `json:"cpu_router_to_franz_go,omitempty"`
	// RateBasis says where the latency passes' offered rate came from:
	// "half the router's events/s" or "--rate"; "" when no contender with
	// a latency pass ran.
	RateBasis string `json:"rate_basis"`
	// Targets are issue 16's targets with the values measured here.
	Targets []TargetCheck `json:"targets"`
	// BrokerPID is --broker-pid: the broker process whose CPU time was
	// read over each throughput span (0: none, and no broker CPU figures).
	BrokerPID int `json:"broker_pid,omitempty"`
	// BrokerCommand is that process's command name (/proc/PID/stat).
	BrokerCommand string `json:"broker_command,omitempty"`
	// BrokerClockTicks is the clock ticks per second of its CPU time: one
	// tick is the resolution of each reading.
	BrokerClockTicks int `json:"broker_clock_ticks_per_second,omitempty"`
}

// ContenderReport is what one contender measured.
type ContenderReport struct {
	// EventsPerSecond is the median over rounds of the throughput pass.
	EventsPerSecond float64 `json:"events_per_second"`
	// RoundEventsPerSecond lists every round.
	RoundEventsPerSecond []float64 `json:"round_events_per_second"`
	// CPUSecondsPerMillion is CPU seconds per million events (median).
	CPUSecondsPerMillion float64 `json:"cpu_seconds_per_million"`
	// CPUMicrosPerEvent is CPU microseconds per event (median): the same
	// figure as CPUSecondsPerMillion, in the unit of one event.
	CPUMicrosPerEvent float64 `json:"cpu_us_per_event"`
	// RoundCPUSecondsPerMillion lists every round.
	RoundCPUSecondsPerMillion []float64 `json:"round_cpu_seconds_per_million"`
	// PeakRSSMiB is the largest VmHWM of the contender's processes.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// PeakLiveHeapMiB is the largest live heap (marked live by a completed
	// GC cycle, sampled every 100ms) of the contender's processes: what
	// the peak RSS holds besides the garbage GOGC lets accumulate and the
	// runtime's own memory.
	PeakLiveHeapMiB float64 `json:"peak_live_heap_mib"`
	// Decisions counts the router's decisions in the last throughput round
	// ("routed", "quarantined", "dead_lettered"); router only.
	Decisions map[string]int `json:"decisions,omitempty"`
	// Latency is the fixed-rate pass (none for the --diagnose contenders).
	Latency *LatencyReport `json:"latency,omitempty"`
	// BrokerCPUMicrosPerEvent (--broker-pid) is the broker process's CPU
	// microseconds (user+system) per event over the contender's throughput
	// spans, the median of RoundBrokerCPUMicrosPerEvent, as the
	// contender's own CPUMicrosPerEvent is of its rounds.
	BrokerCPUMicrosPerEvent float64 `json:"broker_cpu_us_per_event,omitempty"`
	// RoundBrokerCPUMicrosPerEvent lists every round's.
	RoundBrokerCPUMicrosPerEvent []float64 `json:"round_broker_cpu_us_per_event,omitempty"`
	// BrokerPlusCPUMicrosPerEvent (--broker-pid) is
	// BrokerCPUMicrosPerEvent + CPUMicrosPerEvent: the CPU an event costs
	// the broker and the contender together, what decides throughput when
	// they share the host's CPUs.
	BrokerPlusCPUMicrosPerEvent float64 `json:"broker_plus_contender_cpu_us_per_event,omitempty"`
}

// TargetCheck is one target of issue 16 next to what this run measured.
type TargetCheck struct {
	// Name is "throughput", "cpu_per_event", "p99_latency" or "peak_rss".
	Name string `json:"name"`
	// Target says the target in words, e.g. "router events/s >= 0.5 x
	// franz-go's".
	Target string `json:"target"`
	// Limit is the target's bound, in Unit.
	Limit float64 `json:"limit"`
	// Measured is this run's value, in Unit; zero (absent from the JSON)
	// when Verdict is "not measured".
	Measured float64 `json:"measured,omitempty"`
	// Unit of Limit and Measured: "x franz-go", "ms" or "MB".
	Unit string `json:"unit"`
	// Verdict is "pass" when Measured is within Limit, "miss" when not,
	// and "not measured" when a contender the target needs did not run
	// (--contenders) or the router had no latency pass; Caveat then says
	// which.
	Verdict string `json:"verdict"`
	// Caveat lists where this run's conditions differ from the target's
	// (e.g. pins off, fewer events, --rate); "" when they do not.
	Caveat string `json:"caveat,omitempty"`
}

// Issue 16's targets.
const (
	// TargetThroughputVsFranzGo: router events/s at least this fraction
	// of the franz-go pass-through's.
	TargetThroughputVsFranzGo = 0.5
	// TargetCPUVsFranzGo: router CPU per event at most this multiple of
	// the franz-go pass-through's.
	TargetCPUVsFranzGo = 2.0
	// TargetP99Ms: router p99 end-to-end latency at half its own maximum
	// rate, at most this many milliseconds.
	TargetP99Ms = 25.0
	// TargetPeakRSSMB: router peak RSS routing a million events with a
	// million pins loaded, at most this many megabytes (10^6 bytes).
	TargetPeakRSSMB = 100.0
	// targetEvents and targetRounds are the run the targets are stated
	// for (`residency bench --events 1000000 --rounds 3`), targetPins the
	// pins of the memory target.
	targetEvents, targetRounds, targetPins = 1_000_000, 3, 1_000_000
)

// checkTargets fills r.Targets from r's figures. Each check's caveat names
// where the run differs from the one the target is stated for.
func (r *Report) checkTargets() {
	var common []string
	if r.Events < targetEvents {
		common = append(common, fmt.Sprintf("%d events, not %d", r.Events, targetEvents))
	}
	if r.Rounds < targetRounds {
		common = append(common, fmt.Sprintf("%d round(s), not %d", r.Rounds, targetRounds))
	}
	if r.Processes == "in-process" {
		common = append(common, "contenders in the bench's process (CPU and RSS are the whole process's)")
	}
	pinsOff := []string{}
	if r.Pins == 0 {
		pinsOff = append(pinsOff, "pins off (--pins 0)")
	}
	caveat := func(extra ...string) string {
		return strings.Join(append(slices.Clone(common), extra...), "; ")
	}
	check := func(name, target string, limit, measured float64, unit string, atMost bool, cav string) TargetCheck {
		ok := measured >= limit
		if atMost {
			ok = measured <= limit
		}
		verdict := "miss"
		if ok && !math.IsNaN(measured) && !math.IsInf(measured, 0) {
			verdict = "pass"
		}
		return TargetCheck{Name: name, Target: target, Limit: limit, Measured: measured, Unit: unit, Verdict: verdict, Caveat: cav}
	}
	// notRun says which of the contenders a target needs did not run, ""
	// when all did.
	notRun := func(modes ...string) string {
		var out []string
		for _, m := range modes {
			if !r.contender(m).ran() {
				out = append(out, m)
			}
		}
		if len(out) == 0 {
			return ""
		}
		return joinAnd(out) + " not run (--contenders)"
	}
	// unless returns c, or c not measured when why says why it could not
	// be (a contender it needs did not run, no latency pass).
	unless := func(why string, c TargetCheck) TargetCheck {
		if why != "" {
			c.Measured, c.Verdict, c.Caveat = 0, verdictNotMeasured, why
		}
		return c
	}
	var p99 float64
	p99Missing := notRun(contenderRouter)
	if l := r.Router.Latency; l != nil {
		p99 = l.P99Ms
	} else if p99Missing == "" {
		p99Missing = "no latency pass of the router"
	}
	rateCaveat := []string{}
	if r.RateBasis != rateBasisRouter {
		rateCaveat = append(rateCaveat, "offered rate from --rate, not half the router's events/s")
	}
	rssCaveat := []string{}
	if r.Pins < targetPins {
		rssCaveat = append(rssCaveat, fmt.Sprintf("%d pins loaded, not %d", r.Pins, targetPins))
	}
	r.Targets = []TargetCheck{
		unless(notRun(contenderRouter, contenderFranzGo), check("throughput", fmt.Sprintf("router events/s >= %.1f x franz-go's", TargetThroughputVsFranzGo),
			TargetThroughputVsFranzGo, r.RouterToFranzGo, "x franz-go", false, caveat(pinsOff...))),
		unless(notRun(contenderRouter, contenderFranzGo), check("cpu_per_event", fmt.Sprintf("router CPU per event <= %.0f x franz-go's", TargetCPUVsFranzGo),
			TargetCPUVsFranzGo, r.CPURouterToFranzGo, "x franz-go", true, caveat(pinsOff...))),
		unless(p99Missing, check("p99_latency", fmt.Sprintf("router p99 <= %.0f ms at half its own max rate", TargetP99Ms),
			TargetP99Ms, p99, "ms", true, caveat(append(pinsOff, rateCaveat...)...))),
		unless(notRun(contenderRouter), check("peak_rss", fmt.Sprintf("router peak RSS <= %.0f MB with %d pins loaded", TargetPeakRSSMB, targetPins),
			TargetPeakRSSMB, r.Router.PeakRSSMiB*(1<<20)/1e6, "MB", true, caveat(rssCaveat...))),
	}
}

// verdictNotMeasured is the verdict of a target that this run could not
// measure (TargetCheck.Verdict).
const verdictNotMeasured = "not measured"

// Where the latency passes' offered rate came from (Report.RateBasis).
const (
	rateBasisRouter = "half the router's events/s"
	rateBasisFlag   = "--rate"
)

// LatencyReport is the fixed-rate pass of one contender.
type LatencyReport struct {
	OfferedRate  float64 `json:"offered_rate"`  // events/s asked for
	AchievedRate float64 `json:"achieved_rate"` // events/s the producer managed
	Passes       int     `json:"passes"`        // latency passes pooled into this report
	Sent         int     `json:"sent"`          // timed events
	WarmupSent   int     `json:"warmup_sent"`   // untimed events at the offered rate before them
	Received     int     `json:"received"`      // distinct events found at the destinations
	Duplicates   int     `json:"duplicates"`    // extra copies (at-least-once redeliveries)
	// Clock is "log_append_time" when every latency ends at the broker's
	// append time, "arrival" when the broker kept producer timestamps (the
	// embedded stack) and latencies end when the record reached the bench.
	Clock string  `json:"clock"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms"`
	// PassP99Ms is each pass's own p99, in the order run.
	PassP99Ms []float64 `json:"pass_p99_ms"`
}

// add pools one more pass into r: its counts, and its events' latencies
// lats (sorted) with those of the earlier passes, pooled. It returns the
// new pool.
func (r *LatencyReport) add(pass LatencyReport, lats, pooled []time.Duration) []time.Duration {
	r.OfferedRate = pass.OfferedRate
	r.AchievedRate = (r.AchievedRate*float64(r.Passes) + pass.AchievedRate) / float64(r.Passes+1)
	r.Passes++
	r.Sent += pass.Sent
	r.WarmupSent += pass.WarmupSent
	r.Received += pass.Received
	r.Duplicates += pass.Duplicates
	if r.Clock == "" || pass.Clock == "arrival" {
		r.Clock = pass.Clock
	}
	r.PassP99Ms = append(r.PassP99Ms, pass.P99Ms)
	pooled = append(pooled, lats...)
	slices.Sort(pooled)
	if len(pooled) > 0 {
		r.P50Ms, r.P99Ms, r.MaxMs = durMs(quantile(pooled, 0.50)), durMs(quantile(pooled, 0.99)), durMs(pooled[len(pooled)-1])
	}
	return pooled
}

// durMs is d in milliseconds.
func durMs(d time.Duration) float64 { return float64(d) / 1e6 }

// Record headers of bench events.
const (
	benchSentHeader   = "bench-sent"   // producer timestamp, Unix nanoseconds
	benchWarmupHeader = "bench-warmup" // present on warm-up events
	benchSeqHeader    = "bench-seq"    // sequence number of a timed event
)

// benchRun is one invocation's shared state.
type benchRun struct {
	o      Options
	id     string
	admin  *kafka.Admin
	client *kafkago.Client
	remote *kafkago.Client
	topics map[*kafkago.Client][]string // created, to delete at the end
	// embedded: the bench started the embedded stack, whose broker keeps
	// producer timestamps, so latencies end when records reach the bench.
	embedded bool
	pool     *benchPool
	log      io.Writer
	stderr   io.Writer
	// redisAddr and redisPrefix: where the pins were loaded ("": pins off).
	redisAddr, redisPrefix string
}

// Run measures as the package doc says and returns the report; log gets
// the progress lines, stderr the contenders' own output.
func Run(ctx context.Context, o Options, log, stderr io.Writer) (*Report, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	rep := &Report{Target: "embedded", Events: o.Events, Partitions: o.Partitions, BatchSize: o.BatchSize, Rounds: o.Rounds, MemoryLimit: o.MemoryLimit, RouterCompression: o.RouterCompression, RouterCompressionAlt: o.RouterCompressionAlt,
		Processes: "child", GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, CPUs: runtime.NumCPU(),
		LoadStart: loadAverage()[0]}
	if o.InProcess {
		rep.Processes = "in-process"
	}
	if o.BrokerPID > 0 {
		st, err := readProcStat(o.BrokerPID)
		if err != nil {
			return nil, fmt.Errorf("--broker-pid %d: %w", o.BrokerPID, err)
		}
		rep.BrokerPID, rep.BrokerCommand, rep.BrokerClockTicks = o.BrokerPID, st.Comm, clockTicksPerSecond()
	}
	if len(o.Brokers) == 0 {
		fmt.Fprintln(log, "Starting the embedded stack ...")
		st, err := embedded.Start(embedded.Options{Partitions: o.Partitions})
		if err != nil {
			return nil, err
		}
		defer st.Close()
		o.Brokers = st.IngestBrokers()
		if len(o.Remote) > 0 {
			o.Remote = st.RemoteBrokers()
		}
		if o.Redis == "" {
			o.Redis = st.RedisAddr()
		}
	} else {
		rep.Target = strings.Join(o.Brokers, ",")
		rep.Remote = strings.Join(o.Remote, ",")
	}
	b := &benchRun{o: o, id: fmt.Sprintf("bench-%d", time.Now().UnixNano()), topics: map[*kafkago.Client][]string{}, log: log, stderr: stderr,
		embedded: rep.Target == "embedded"}
	var err error
	if b.admin, err = kafka.NewAdmin(kafka.Cluster{Name: "ingest", Brokers: o.Brokers}); err != nil {
		return nil, err
	}
	b.client = &kafkago.Client{Addr: kafkago.TCP(o.Brokers...), Timeout: 30 * time.Second}
	if len(o.Remote) > 0 {
		b.remote = &kafkago.Client{Addr: kafkago.TCP(o.Remote...), Timeout: 30 * time.Second}
	}
	if !o.KeepTopics {
		defer b.deleteTopics()
	}
	if b.pool, err = newBenchPool(o.Seed, o.Pins); err != nil {
		return nil, err
	}
	if o.Pins > 0 {
		fmt.Fprintf(log, "Loading %d pins into Redis at %s ...\n", o.Pins, o.Redis)
		start := time.Now()
		cleanup, err := b.loadPins(ctx)
		if cleanup != nil {
			defer cleanup()
		}
		if err != nil {
			return nil, err
		}
		rep.Pins = o.Pins
		fmt.Fprintf(log, "Loaded in %s.\n", time.Since(start).Round(time.Millisecond))
	}

	// Throughput: preload, then each contender consumes everything.
	ingest := b.id + ".ingest"
	if err := b.createTopics(ctx, b.client, false, ingest); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "Preloading %d events into %s (%d partitions) ...\n", o.Events, ingest, o.Partitions)
	start := time.Now()
	if rep.Mix, rep.PinnedEvents, err = b.preload(ctx, ingest); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "Preloaded in %s.\n", time.Since(start).Round(time.Millisecond))
	if o.runs(contenderFanOut) {
		rep.FanOut = &ContenderReport{}
	}
	if o.runs(contenderWriterPass) {
		rep.WriterPass = &ContenderReport{}
	}
	if o.runs(contenderRouterAlt) {
		rep.RouterAlt = &ContenderReport{}
	}
	rep.AuditCompression, rep.AuditCompressionB = o.AuditCompression, o.AuditCompressionB
	if o.runs(contenderRouterAuditB) {
		rep.RouterAuditB = &ContenderReport{}
	}
	if o.Contenders != nil {
		rep.Contenders = o.throughputOrder(0)
	}
	for round := range o.Rounds {
		for _, mode := range o.throughputOrder(round) {
			res, err := b.throughput(ctx, mode, ingest, round)
			if err != nil {
				return nil, err
			}
			rate := float64(res.Events) / res.Seconds
			cpu := res.CPUSeconds / float64(res.Events) * 1e6
			c := rep.contender(mode)
			c.RoundEventsPerSecond = append(c.RoundEventsPerSecond, rate)
			c.RoundCPUSecondsPerMillion = append(c.RoundCPUSecondsPerMillion, cpu)
			c.PeakRSSMiB = max(c.PeakRSSMiB, float64(res.PeakRSSBytes)/(1<<20))
			c.PeakLiveHeapMiB = max(c.PeakLiveHeapMiB, float64(res.PeakLiveHeapBytes)/(1<<20))
			if res.Decisions != nil {
				c.Decisions = res.Decisions
			}
			broker := ""
			if o.BrokerPID > 0 {
				bcpu := res.BrokerCPUSeconds / float64(res.Events) * 1e6
				c.RoundBrokerCPUMicrosPerEvent = append(c.RoundBrokerCPUMicrosPerEvent, bcpu)
				broker = fmt.Sprintf(", broker %.2f CPU µs per event", bcpu)
			}
			fmt.Fprintf(log, "Round %d, %s: %d events in %.2fs: %.0f events/s, %.2f CPU s per million (µs per event)%s, peak RSS %.0f MiB, peak live heap %.0f MiB\n",
				round+1, mode, res.Events, res.Seconds, rate, cpu, broker, float64(res.PeakRSSBytes)/(1<<20), float64(res.PeakLiveHeapBytes)/(1<<20))
		}
	}
	rep.derive()

	// Latency at a fixed offered rate (Validate: the router runs, or --rate
	// is given, when any contender has a latency pass).
	rate := o.Rate
	if len(o.latencyOrder(0)) > 0 {
		rep.RateBasis = rateBasisFlag
		if rate == 0 {
			rate, rep.RateBasis = rep.Router.EventsPerSecond/2, rateBasisRouter
		}
	}
	// Passes in the order A B B A ...: whatever changes over the run (the
	// broker after millions of records, the host's other load) weighs on
	// both contenders alike; percentiles are over all of a contender's
	// events.
	pooled := map[string][]time.Duration{}
	for k := range o.LatencyPasses {
		for _, mode := range o.latencyOrder(k) {
			lat, lats, peak, heap, err := b.latency(ctx, mode, rate, k+1)
			if err != nil {
				return nil, err
			}
			c := rep.contender(mode)
			if c.Latency == nil {
				c.Latency = &LatencyReport{}
			}
			pooled[mode] = c.Latency.add(lat, lats, pooled[mode])
			c.PeakRSSMiB = max(c.PeakRSSMiB, peak)
			c.PeakLiveHeapMiB = max(c.PeakLiveHeapMiB, heap)
			fmt.Fprintf(log, "Latency pass %d, %s at %.0f events/s offered (%.0f achieved): p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d of %d events, %d duplicates)\n",
				k+1, mode, lat.OfferedRate, lat.AchievedRate, lat.P50Ms, lat.P99Ms, lat.MaxMs, lat.Received, lat.Sent, lat.Duplicates)
		}
	}
	rep.LoadEnd = loadAverage()[0]
	rep.checkTargets()
	return rep, nil
}

// derive sets each contender's medians over its rounds and, from them, the
// ratios between contenders. A ratio one of whose contenders did not run
// (--contenders) stays zero: absent from the JSON, "not measured" in the
// table; it is never computed against a zero.
func (r *Report) derive() {
	for _, c := range []*ContenderReport{&r.PassThrough, &r.Router, &r.RouterAudit, r.RouterAuditB, &r.FranzGo, r.FanOut, r.WriterPass, r.RouterAlt} {
		if c != nil {
			c.EventsPerSecond = median(c.RoundEventsPerSecond)
			c.CPUSecondsPerMillion = median(c.RoundCPUSecondsPerMillion)
			c.CPUMicrosPerEvent = c.CPUSecondsPerMillion // 1 s per million events is 1 µs per event
			// Without --broker-pid (no rounds of the broker's CPU): absent.
			c.BrokerCPUMicrosPerEvent, c.BrokerPlusCPUMicrosPerEvent = 0, 0
			if len(c.RoundBrokerCPUMicrosPerEvent) > 0 {
				c.BrokerCPUMicrosPerEvent = median(c.RoundBrokerCPUMicrosPerEvent)
				c.BrokerPlusCPUMicrosPerEvent = c.BrokerCPUMicrosPerEvent + c.CPUMicrosPerEvent
			}
		}
	}
	r.Ratio, r.RoundRatios = eventsRatio(&r.Router, &r.PassThrough)
	r.RouterToFranzGo, r.RouterToFranzGoRounds = eventsRatio(&r.Router, &r.FranzGo)
	r.CPURouterToFranzGo = cpuRatio(&r.Router, &r.FranzGo)
	r.AuditRatio, r.AuditRounds = eventsRatio(&r.RouterAudit, &r.Router)
	r.AuditRatioB, r.AuditRoundsB = eventsRatio(r.RouterAuditB, &r.Router)
	r.AuditBToA, r.AuditBToARounds = eventsRatio(r.RouterAuditB, &r.RouterAudit)
	r.RouterAltToFranzGo, r.RouterAltToFranzGoRounds = eventsRatio(r.RouterAlt, &r.FranzGo)
	r.CPURouterAltToFranzGo = cpuRatio(r.RouterAlt, &r.FranzGo)
	r.FanOutRatio, _ = eventsRatio(r.FanOut, &r.PassThrough)
	r.RouterToWriterPass, _ = eventsRatio(&r.Router, r.WriterPass)
}

// ran reports whether c's contender ran: a contender left out has no
// report or a zero one.
func (c *ContenderReport) ran() bool { return c != nil && c.EventsPerSecond > 0 }

// eventsRatio is a's events/s over b's, the median and each round's; zero
// and nil unless both ran.
func eventsRatio(a, b *ContenderReport) (float64, []float64) {
	if !a.ran() || !b.ran() {
		return 0, nil
	}
	var rounds []float64
	for i := range min(len(a.RoundEventsPerSecond), len(b.RoundEventsPerSecond)) {
		if b.RoundEventsPerSecond[i] > 0 {
			rounds = append(rounds, a.RoundEventsPerSecond[i]/b.RoundEventsPerSecond[i])
		}
	}
	return a.EventsPerSecond / b.EventsPerSecond, rounds
}

// cpuRatio is a's CPU per event over b's; zero unless both ran.
func cpuRatio(a, b *ContenderReport) float64 {
	if !a.ran() || !b.ran() || b.CPUMicrosPerEvent <= 0 {
		return 0
	}
	return a.CPUMicrosPerEvent / b.CPUMicrosPerEvent
}

// contender returns the report of mode; for the contenders that options
// add (router+audit-b, router-alt, the --diagnose pair), nil unless the
// run includes them.
func (r *Report) contender(mode string) *ContenderReport {
	switch mode {
	case contenderRouter:
		return &r.Router
	case contenderRouterAudit:
		return &r.RouterAudit
	case contenderRouterAuditB:
		return r.RouterAuditB
	case contenderFanOut:
		return r.FanOut
	case contenderWriterPass:
		return r.WriterPass
	case contenderRouterAlt:
		return r.RouterAlt
	case contenderFranzGo:
		return &r.FranzGo
	}
	return &r.PassThrough
}

// childSpec returns the spec of a contender reading ingest; destinations
// are named after prefix. The router gets the pins' Redis, if any.
func (b *benchRun) childSpec(mode, ingest, prefix string, expect int) childSpec {
	spec := childSpec{Mode: mode, Brokers: b.o.Brokers, RemoteBrokers: b.o.Remote, Ingest: ingest,
		Group: prefix + ".group", Dest: prefix + ".out", Prefix: prefix, Expect: expect,
		BatchSize: b.o.BatchSize, Linger: b.o.Linger, Timeout: b.o.Timeout}
	if mode == contenderRouter || mode == contenderRouterAudit || mode == contenderRouterAuditB || mode == contenderRouterAlt {
		spec.RedisAddr, spec.RedisPrefix = b.redisAddr, b.redisPrefix
		spec.MemoryLimit = b.o.MemoryLimit
		spec.MaxInflightEvents = b.o.MaxInflightEvents
		spec.MaxUncommittedEvents = b.o.MaxUncommittedEvents
		spec.MaxUncommittedBytes = b.o.MaxUncommittedBytes
		spec.Compression = b.o.RouterCompression
		if mode == contenderRouterAlt {
			spec.Compression = b.o.RouterCompressionAlt
		}
	}
	switch mode {
	case contenderRouterAudit:
		spec.AuditCompression = b.o.AuditCompression
	case contenderRouterAuditB:
		spec.AuditCompression = b.o.AuditCompressionB
	}
	return spec
}

// profiled sets spec's CPU and heap profile files when --cpuprofile or
// --memprofile is given.
func (b *benchRun) profiled(spec childSpec, name string) childSpec {
	if b.o.CPUProfile != "" && !b.o.InProcess {
		spec.CPUProfile = filepath.Join(b.o.CPUProfile, name+".pprof")
	}
	if b.o.MemProfile != "" && !b.o.InProcess {
		spec.MemProfile = filepath.Join(b.o.MemProfile, name+"-heap.pprof")
	}
	return spec
}

// destinations creates (LogAppendTime) and returns the topics a contender
// writes to, by client.
func (b *benchRun) destinations(ctx context.Context, mode, prefix string) (map[*kafkago.Client][]string, error) {
	out := map[*kafkago.Client][]string{}
	if mode == contenderPassThrough || mode == contenderWriterPass || mode == contenderFranzGo {
		out[b.client] = []string{prefix + ".out"}
	} else if mode == contenderFanOut {
		out[b.client] = []string{prefix + ".us", prefix + ".eu", prefix + ".uk", prefix + ".in", prefix + ".br", prefix + ".quarantine", prefix + ".dead-letter"}
	} else {
		out[b.client] = []string{prefix + ".us", prefix + ".in", prefix + ".br", prefix + ".quarantine", prefix + ".dead-letter"}
		far := b.client
		if b.remote != nil {
			far = b.remote
		}
		out[far] = append(out[far], prefix+".eu", prefix+".uk")
		if mode == contenderRouterAudit || mode == contenderRouterAuditB {
			// The audit topic: one partition (docs/audit.md).
			if err := b.createAuditTopic(ctx, prefix+".audit"); err != nil {
				return nil, err
			}
		}
	}
	for c, names := range out {
		if err := b.createTopics(ctx, c, true, names...); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// throughput runs one contender over the preloaded ingest topic.
func (b *benchRun) throughput(ctx context.Context, mode, ingest string, round int) (childResult, error) {
	prefix := fmt.Sprintf("%s.r%d.%s", b.id, round, strings.ReplaceAll(mode, "+", "_")) // Kafka topic names allow [a-zA-Z0-9._-]
	if _, err := b.destinations(ctx, mode, prefix); err != nil {
		return childResult{}, err
	}
	spec := b.profiled(b.childSpec(mode, ingest, prefix, b.o.Events), fmt.Sprintf("throughput-r%d-%s", round+1, mode))
	spec.BrokerPID = b.o.BrokerPID // throughput only: the latency passes' broker also serves the bench's producer
	wait, err := startContender(ctx, spec, b.o.InProcess, b.stderr)
	if err != nil {
		return childResult{}, err
	}
	return wait()
}

// latency runs one pass (numbered pass) of one contender on a fresh ingest
// topic while events are produced at rate, then reads the destinations
// back; it returns the pass's report and its events' latencies, sorted.
func (b *benchRun) latency(ctx context.Context, mode string, rate float64, pass int) (LatencyReport, []time.Duration, float64, float64, error) {
	prefix := fmt.Sprintf("%s.lat%d.%s", b.id, pass, mode)
	ingest := prefix + ".ingest"
	// Traced (RESIDENCY_BENCH_TRACE), the ingest topic keeps the broker's
	// append time: the trace splits the bench producer's write from the
	// contender's fetch.
	if err := b.createTopics(ctx, b.client, os.Getenv("RESIDENCY_BENCH_TRACE") != "", ingest); err != nil {
		return LatencyReport{}, nil, 0, 0, err
	}
	dests, err := b.destinations(ctx, mode, prefix)
	if err != nil {
		return LatencyReport{}, nil, 0, 0, err
	}
	const warmup = 200
	n := max(int(math.Round(rate*b.o.LatencyFor.Seconds())), 1)
	// Untimed events at the offered rate before the timed ones: the first
	// second at rate carries one-off costs (the broker's first appends to
	// new partitions, the heap growing to its working size) that are not
	// what the pass measures.
	atRate := int(math.Round(rate * b.o.LatencyWarmup.Seconds()))
	spec := b.profiled(b.childSpec(mode, ingest, prefix, warmup+atRate+n), fmt.Sprintf("latency-p%d-%s", pass, mode))
	tl, err := b.startTail(ctx, dests, n)
	if err != nil {
		return LatencyReport{}, nil, 0, 0, err
	}
	defer tl.stop()
	wait, err := startContender(ctx, spec, b.o.InProcess, b.stderr)
	if err != nil {
		return LatencyReport{}, nil, 0, 0, err
	}
	w := b.writer(b.o.BatchSize)
	defer w.Close()
	rng := rand.New(rand.NewPCG(b.o.Seed, 99))
	// Warm up: the contender has joined its group and reached every
	// partition's leader once these are committed.
	var msgs []kafkago.Message
	for range warmup {
		m := b.pool.next(rng, ingest)
		m.Headers = append(m.Headers, kafkago.Header{Key: benchWarmupHeader, Value: []byte("1")})
		msgs = append(msgs, m)
	}
	if err := writeRetry(ctx, w, msgs); err != nil {
		return LatencyReport{}, nil, 0, 0, fmt.Errorf("produce warm-up events: %w", err)
	}
	for {
		lag, err := b.admin.Lag(ctx, spec.Group, ingest)
		if err == nil && lag == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return LatencyReport{}, nil, 0, 0, fmt.Errorf("the %s contender did not take the warm-up events: %w", mode, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// Offer atRate untimed events, then the n timed ones, at rate: every
	// tick, send what is due since the start.
	start := time.Now()
	var timedStart time.Time
	sent, total := 0, atRate+n
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for sent < total {
		due := min(int(time.Since(start).Seconds()*rate)+1, total)
		if due > sent {
			msgs = msgs[:0]
			now := time.Now()
			stamp := strconv.AppendInt(nil, now.UnixNano(), 10)
			for k := sent; k < due; k++ {
				m := b.pool.next(rng, ingest)
				if k < atRate {
					m.Headers = append(m.Headers, kafkago.Header{Key: benchWarmupHeader, Value: []byte("1")})
				} else {
					if k == atRate {
						timedStart = now
					}
					m.Headers = append(m.Headers, kafkago.Header{Key: benchSentHeader, Value: stamp},
						kafkago.Header{Key: benchSeqHeader, Value: strconv.AppendInt(nil, int64(k-atRate), 10)})
				}
				msgs = append(msgs, m)
			}
			if err := writeRetry(ctx, w, msgs); err != nil {
				return LatencyReport{}, nil, 0, 0, fmt.Errorf("produce at a fixed rate: %w", err)
			}
			sent = due
		}
		select {
		case <-ctx.Done():
			return LatencyReport{}, nil, 0, 0, ctx.Err()
		case <-tick.C:
		}
	}
	produced := time.Since(timedStart)
	res, err := wait()
	if err != nil {
		return LatencyReport{}, nil, 0, 0, err
	}
	lats, err := tl.finish(ctx, b)
	if err != nil {
		return LatencyReport{}, nil, 0, 0, err
	}
	rep := LatencyReport{OfferedRate: rate, AchievedRate: float64(n) / produced.Seconds(), Sent: n, WarmupSent: atRate, Received: len(lats),
		Duplicates: tl.dups, Clock: "log_append_time"}
	if tl.arrivals > 0 {
		rep.Clock = "arrival"
	}
	if len(lats) > 0 {
		slices.Sort(lats)
		rep.P50Ms, rep.P99Ms, rep.MaxMs = durMs(quantile(lats, 0.50)), durMs(quantile(lats, 0.99)), durMs(lats[len(lats)-1])
	}
	return rep, lats, float64(res.PeakRSSBytes) / (1 << 20), float64(res.PeakLiveHeapBytes) / (1 << 20), nil
}

// tail follows the destination topics of a latency pass from their start.
// For each of the n timed events (by sequence number; a redelivered copy
// counts once, at its first append) it keeps the append time minus the
// producer timestamp. It reads with franz-go, which reports the broker's
// LogAppendTime (kafka-go reports the producer's timestamp instead). A
// broker that keeps the producer's timestamp even so (kfake applies
// LogAppendTime only when the producer asks for it) gets the time the
// record reached the tail instead, an upper bound of the append time.
type tail struct {
	dests   map[*kafkago.Client][]string
	clients []*kgo.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu       sync.Mutex
	n        int
	first    []time.Duration
	seen     []bool
	distinct int
	dups     int
	arrivals int   // latencies taken at arrival, not from LogAppendTime
	consumed int64 // every record, warm-up included
}

func (b *benchRun) startTail(ctx context.Context, dests map[*kafkago.Client][]string, n int) (*tail, error) {
	ctx, cancel := context.WithCancel(ctx)
	t := &tail{dests: dests, cancel: cancel, n: n, first: make([]time.Duration, n), seen: make([]bool, n)}
	for c, topics := range dests {
		brokers := b.o.Brokers
		if c == b.remote {
			brokers = b.o.Remote
		}
		opts := []kgo.Opt{kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topics...),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100 * time.Millisecond)}
		if !b.embedded {
			// A latency ends at the broker's append time, not when the
			// bench reads the record: read in large, lazy fetches, so that
			// following the router's 42 destination partitions (against the
			// pass-through's 6) costs the shared CPUs as little as it can.
			opts = append(opts, kgo.FetchMinBytes(1<<20), kgo.FetchMaxWait(250*time.Millisecond))
		}
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.stop()
			return nil, err
		}
		t.clients = append(t.clients, cl)
		t.wg.Go(func() {
			for ctx.Err() == nil {
				fs := cl.PollFetches(ctx)
				now := time.Now()
				t.mu.Lock()
				fs.EachRecord(func(r *kgo.Record) { t.record(r, now) })
				t.mu.Unlock()
			}
		})
	}
	return t, nil
}

// record notes one record; t.mu is held.
func (t *tail) record(r *kgo.Record, now time.Time) {
	t.consumed++
	var sent, seq int64 = 0, -1
	for _, h := range r.Headers {
		switch h.Key {
		case benchSentHeader:
			sent, _ = strconv.ParseInt(string(h.Value), 10, 64)
		case benchSeqHeader:
			seq, _ = strconv.ParseInt(string(h.Value), 10, 64)
		}
	}
	if seq < 0 || seq >= int64(t.n) {
		return // a warm-up event
	}
	at := r.Timestamp
	if r.Attrs.TimestampType() != 1 { // not LogAppendTime
		at = now
		t.arrivals++
	}
	lat := at.Sub(time.Unix(0, sent))
	if t.seen[seq] {
		t.dups++
		t.first[seq] = min(t.first[seq], lat)
		return
	}
	t.seen[seq] = true
	t.distinct++
	t.first[seq] = lat
}

// finish waits until the tail has read every record now in the
// destinations, stops it and returns the latencies. It fails if a timed
// event is missing.
func (t *tail) finish(ctx context.Context, b *benchRun) ([]time.Duration, error) {
	var end int64
	for c, topics := range t.dests {
		brokers := b.o.Brokers
		if c == b.remote {
			brokers = b.o.Remote
		}
		e, err := b.endOffsets(ctx, brokers, topics)
		if err != nil {
			return nil, err
		}
		end += e
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		t.mu.Lock()
		consumed := t.consumed
		t.mu.Unlock()
		if consumed >= end {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("read back the destinations: %d of %d records", consumed, end)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.stop()
	if t.distinct != t.n {
		return nil, fmt.Errorf("the destinations hold %d of the %d events produced: %d lost", t.distinct, t.n, t.n-t.distinct)
	}
	return t.first, nil
}

// stop ends the tail's reading; it is safe to call twice.
func (t *tail) stop() {
	t.cancel()
	t.wg.Wait()
	for _, cl := range t.clients {
		cl.Close()
	}
	t.clients = nil
}

// endOffsets sums the high-water marks of topics.
func (b *benchRun) endOffsets(ctx context.Context, brokers, topics []string) (int64, error) {
	a, err := kafka.NewAdmin(kafka.Cluster{Name: "bench", Brokers: brokers})
	if err != nil {
		return 0, err
	}
	var sum int64
	for _, t := range topics {
		end, err := a.EndOffsets(ctx, t)
		if err != nil {
			return 0, err
		}
		for _, o := range end {
			sum += o
		}
	}
	return sum, nil
}

// writer returns the producer of the bench: acks from all replicas, hash
// partitioning on the key.
func (b *benchRun) writer(batch int) *kafkago.Writer {
	return &kafkago.Writer{Addr: kafkago.TCP(b.o.Brokers...), Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchSize: batch, BatchBytes: 1 << 20, BatchTimeout: time.Millisecond, WriteTimeout: 30 * time.Second}
}

// preload writes o.Events events to topic and counts them by kind, and
// those of pinned users.
func (b *benchRun) preload(ctx context.Context, topic string) (mix map[string]int, pinned int, err error) {
	w := b.writer(1000)
	defer w.Close()
	rng := rand.New(rand.NewPCG(b.o.Seed, 1))
	mix = map[string]int{}
	msgs := make([]kafkago.Message, 0, 20_000)
	for sent := 0; sent < b.o.Events; {
		msgs = msgs[:0]
		now := strconv.AppendInt(nil, time.Now().UnixNano(), 10)
		for range min(cap(msgs), b.o.Events-sent) {
			m := b.pool.next(rng, topic)
			mix[b.pool.lastKind]++
			if _, ok := b.pool.pinned[string(m.Key)]; ok {
				pinned++
			}
			m.Headers = append(m.Headers, kafkago.Header{Key: benchSentHeader, Value: now})
			msgs = append(msgs, m)
		}
		if err := writeRetry(ctx, w, msgs); err != nil {
			return nil, 0, fmt.Errorf("preload: %w", err)
		}
		sent += len(msgs)
	}
	return mix, pinned, nil
}

// pinsKey is the Redis hash of the pins under prefix, user id →
// jurisdiction: the layout connectors/redis.Rules reads (and `residency
// rules pin` writes one pin at a time).
func pinsKey(prefix string) string { return prefix + "pins" }

// loadPins writes the pool's pinned users and then synthetic ones
// ("bench-pin-N", users no event has) into Redis under a prefix of this
// run, o.Pins in all, in pipelined HSETs, and checks the count. The
// returned cleanup (nil if nothing was written) deletes them.
func (b *benchRun) loadPins(ctx context.Context) (cleanup func(), err error) {
	client, err := redisconn.NewClient(redisconn.Config{Addr: b.o.Redis}, redisconn.ClientOptions{Timeout: time.Minute})
	if err != nil {
		return nil, err
	}
	prefix := b.id + ":"
	key := pinsKey(prefix)
	cleanup = func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := client.Unlink(ctx, key).Err(); err != nil {
			fmt.Fprintf(b.stderr, "residency bench: delete the pins: %v\n", err)
		}
		_ = client.Close()
	}
	jurisdictions := []string{"EU", "US", "UK", "IN", "BR"}
	const perHSet, perPipeline = 5_000, 20
	args := make([]any, 0, 2*perHSet)
	pipe := client.Pipeline()
	queued := 0
	flush := func() error {
		if len(args) > 0 {
			pipe.HSet(ctx, key, args...)
			args = args[:0]
			queued++
		}
		if queued > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("load pins into Redis at %s: %w", b.o.Redis, err)
			}
			queued = 0
		}
		return nil
	}
	for i := range b.o.Pins {
		user := fmt.Sprintf("bench-pin-%d", i)
		if i < len(b.pool.pinList) {
			user = b.pool.pinList[i]
		}
		args = append(args, user, jurisdictions[i%len(jurisdictions)])
		if len(args) == cap(args) {
			pipe.HSet(ctx, key, args...)
			args = make([]any, 0, 2*perHSet) // the pipeline holds the old slice until Exec
			if queued++; queued == perPipeline {
				if err := flush(); err != nil {
					return cleanup, err
				}
			}
		}
	}
	if err := flush(); err != nil {
		return cleanup, err
	}
	n, err := client.HLen(ctx, key).Result()
	if err != nil {
		return cleanup, fmt.Errorf("count the pins in Redis at %s: %w", b.o.Redis, err)
	}
	if n != int64(b.o.Pins) {
		return cleanup, fmt.Errorf("loaded %d pins into Redis at %s, found %d", b.o.Pins, b.o.Redis, n)
	}
	b.redisAddr, b.redisPrefix = b.o.Redis, prefix
	return cleanup, nil
}

// createAuditTopic creates the one-partition audit topic name on the
// ingest cluster.
func (b *benchRun) createAuditTopic(ctx context.Context, name string) error {
	resp, err := b.client.CreateTopics(ctx, &kafkago.CreateTopicsRequest{Topics: []kafkago.TopicConfig{{Topic: name, NumPartitions: 1,
		ReplicationFactor: b.o.Replication}}})
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for n, e := range resp.Errors {
		if e != nil {
			return fmt.Errorf("create topic %s: %w", n, e)
		}
	}
	b.topics[b.client] = append(b.topics[b.client], name)
	a, err := kafka.NewAdmin(kafka.Cluster{Name: "bench", Brokers: b.o.Brokers})
	if err != nil {
		return err
	}
	defer a.Close()
	return a.CreateTopics(ctx, 1, b.o.Replication, name) // exists already: waits for its leader
}

// createTopics creates names on c with the bench's partitions, and
// LogAppendTime timestamps when appendTime (destinations, so a record's
// timestamp there is when the broker appended it).
func (b *benchRun) createTopics(ctx context.Context, c *kafkago.Client, appendTime bool, names ...string) error {
	req := &kafkago.CreateTopicsRequest{}
	for _, n := range names {
		tc := kafkago.TopicConfig{Topic: n, NumPartitions: b.o.Partitions, ReplicationFactor: b.o.Replication}
		if appendTime {
			tc.ConfigEntries = []kafkago.ConfigEntry{{ConfigName: "message.timestamp.type", ConfigValue: "LogAppendTime"}}
		}
		req.Topics = append(req.Topics, tc)
	}
	resp, err := c.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	for n, e := range resp.Errors {
		if e != nil {
			return fmt.Errorf("create topic %s: %w", n, e)
		}
	}
	b.topics[c] = append(b.topics[c], names...)
	brokers := b.o.Brokers
	if c == b.remote {
		brokers = b.o.Remote
	}
	a, err := kafka.NewAdmin(kafka.Cluster{Name: "bench", Brokers: brokers})
	if err != nil {
		return err
	}
	defer a.Close()
	return a.CreateTopics(ctx, b.o.Partitions, b.o.Replication, names...) // exist already: waits for leaders
}

// deleteTopics deletes what the run created (best effort).
func (b *benchRun) deleteTopics() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for c, names := range b.topics {
		if _, err := c.DeleteTopics(ctx, &kafkago.DeleteTopicsRequest{Topics: names}); err != nil {
			fmt.Fprintf(b.stderr, "residency bench: delete topics: %v\n", err)
		}
	}
}

// benchPool holds pre-encoded events of the canonical schema in the mix the
// bench produces; encoding each event with goavro would make the producer,
// not the contenders, the bottleneck.
type benchPool struct {
	kinds    []benchKind
	lastKind string
	// pinList are the sample users pinned first with --pins, in order:
	// every user of the events without a country (a pin places them
	// instead of quarantine) and every 64th sample of each routable kind.
	// pinned holds those of them that --pins covers.
	pinList []string
	pinned  map[string]struct{}
}

// benchKind is one kind of event, how often it occurs (per 10 000) and
// encoded samples of it.
type benchKind struct {
	name   string
	per10k int
	keys   [][]byte
	values [][]byte
	// vary lists, per sample, where next writes fresh digits into a copy
	// of the sample so that no two events are alike (see sampleDigits).
	vary [][]digitRun
}

// digitRun is a run of decimal digits in a sample's value (inValue) or key
// (!inValue) that next replaces with random ones of the same length, so
// that the Avro encoding stays valid. Runs with the same group get the
// same digits (a user id occurs in the key, user_id, session_id and
// device_id).
type digitRun struct {
	inValue bool
	off, n  int
	group   int
}

// newBenchPool returns the pool of the seed's events, pins of them pinned
// (see benchPool.pinList). Every sample has a user of its own.
func newBenchPool(seed uint64, pins int) (*benchPool, error) {
	enc, err := sample.NewEncoder()
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(seed, 2))
	p := &benchPool{pinned: map[string]struct{}{}}
	users := map[string]bool{}
	var routablePins []string
	// Routable 96.7%, unplaceable 3% (no country, unknown country),
	// malformed 0.3% (bad magic, truncated, unknown fingerprint).
	kinds := []struct {
		name      string
		per10k    int
		countries []string
		malformed sample.Malformation // "": a well-formed event
	}{
		{"routable US", 3500, []string{"US", "US", "US", "PR"}, ""},
		{"routable EU", 2500, []string{"DE", "FR", "IT", "ES", "NL", "PL", "SE"}, ""},
		{"routable UK", 1000, []string{"GB"}, ""},
		{"routable IN", 1570, []string{"IN"}, ""},
		{"routable BR", 1100, []string{"BR"}, ""},
		{"unplaceable no_country", 150, []string{""}, ""},
		{"unplaceable unknown_country", 150, []string{"ZZ", "XK", "AQ"}, ""},
		{"malformed bad_magic", 10, []string{"US"}, sample.BadMagic},
		{"malformed truncated", 10, []string{"US"}, sample.Truncated},
		{"malformed unknown_schema", 10, []string{"US"}, sample.UnknownSchema},
	}
	total := 0
	types := []string{"VIDEO_VIEW", "VIDEO_LIKE", "COMMENT", "FOLLOW", "SEARCH", "LOGIN"}
	for _, k := range kinds {
		total += k.per10k
		bk := benchKind{name: k.name, per10k: k.per10k}
		for i := range 256 {
			user := fmt.Sprintf("user-%d", rng.IntN(1_000_000))
			for users[user] {
				user = fmt.Sprintf("user-%d", rng.IntN(1_000_000))
			}
			users[user] = true
			switch {
			case k.name == "unplaceable no_country":
				p.pinList = append(p.pinList, user)
			case strings.HasPrefix(k.name, "routable") && i%64 == 0:
				routablePins = append(routablePins, user)
			}
			ev := sample.Event{ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", rng.Int64N(1e12)), UserID: user,
				Country: k.countries[i%len(k.countries)], Type: types[rng.IntN(len(types))]}
			var v []byte
			var err error
			if k.malformed == "" {
				v, err = enc.Encode(ev)
			} else {
				v, err = enc.Malformed(ev, k.malformed)
			}
			if err != nil {
				return nil, err
			}
			var vary []digitRun
			if k.malformed == "" {
				// Every event gets an event id of its own, and every event of
				// an unpinned-by-design user a user of its own: a real stream
				// repeats neither, and a codec on the produce path
				// (kafka.compression) must not be measured on repeats the
				// pool alone makes.
				vary = sampleDigits(v, []byte(user), ev.ID[len(ev.ID)-12:], user[len("user-"):], slices.Contains(p.pinList, user) || i%64 == 0 && strings.HasPrefix(k.name, "routable"))
			}
			bk.keys = append(bk.keys, []byte(user))
			bk.values = append(bk.values, v)
			bk.vary = append(bk.vary, vary)
		}
		p.kinds = append(p.kinds, bk)
	}
	if total != 10_000 {
		return nil, errors.New("bench: the event mix does not add up to 100%")
	}
	p.pinList = append(p.pinList, routablePins...)
	for _, u := range p.pinList[:min(pins, len(p.pinList))] {
		p.pinned[u] = struct{}{}
	}
	return p, nil
}

// sampleDigits returns the digit runs of an encoded sample that next
// varies: the last 12 digits of its event id (idDigits) and, unless
// keepUser (a user a pin may name), every occurrence of its user's
// digits (userDigits) in the value and the key.
func sampleDigits(value, key []byte, idDigits, userDigits string, keepUser bool) []digitRun {
	var runs []digitRun
	// add records every run of digits in in that follows prefix.
	add := func(in []byte, inValue bool, prefix, digits string, group int) {
		needle := []byte(prefix + digits)
		for off := 0; ; {
			i := bytes.Index(in[off:], needle)
			if i < 0 {
				return
			}
			runs = append(runs, digitRun{inValue: inValue, off: off + i + len(prefix), n: len(digits), group: group})
			off += i + len(needle)
		}
	}
	add(value, true, "-", idDigits, 0)
	if !keepUser {
		add(value, true, "user-", userDigits, 1)
		add(key, false, "user-", userDigits, 1)
	}
	return runs
}

// next returns a random event of the mix for topic: a copy of one of the
// pool's samples with its digit runs (benchKind.vary) made fresh.
func (p *benchPool) next(rng *rand.Rand, topic string) kafkago.Message {
	r := rng.IntN(10_000)
	for _, k := range p.kinds {
		if r < k.per10k {
			i := rng.IntN(len(k.values))
			p.lastKind = k.name
			key, value := k.keys[i], k.values[i]
			if runs := k.vary[i]; len(runs) > 0 {
				key, value = bytes.Clone(key), bytes.Clone(value)
				var digits [2][20]byte
				for g := range digits {
					for j := range digits[g] {
						digits[g][j] = '0' + byte(rng.IntN(10))
					}
				}
				digits[1][0] = '1' + byte(rng.IntN(9)) // a user id's number has no leading zero
				for _, run := range runs {
					d := digits[run.group][:run.n]
					if run.inValue {
						copy(value[run.off:], d)
					} else {
						copy(key[run.off:], d)
					}
				}
			}
			return kafkago.Message{Topic: topic, Key: key, Value: value}
		}
		r -= k.per10k
	}
	panic("unreachable")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// quantile of sorted xs (nearest rank).
func quantile(xs []time.Duration, q float64) time.Duration {
	i := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(i, 0), len(xs)-1)]
}

// auditName names an audit contender in the table with its audit topic's
// compression when the run compares two.
func (r *Report) auditName(mode, codec string) string {
	if r.RouterAuditB == nil {
		return mode
	}
	return mode + " (" + cmp.Or(codec, kafka.DefaultAuditCompression) + ")"
}

// Table prints the report for people.
func (r *Report) Table(out io.Writer) {
	where := "child processes"
	if r.Processes == "in-process" {
		where = "this process"
	}
	target := r.Target
	if r.Remote != "" {
		target += " (EU and UK pinned topics on " + r.Remote + ")"
	}
	pins := "pins off"
	if r.Pins > 0 {
		pins = fmt.Sprintf("%d pins loaded (%d events of pinned users)", r.Pins, r.PinnedEvents)
	}
	fmt.Fprintf(out, "\nTarget %s, %d events, %d partitions, batches of %d, %d round(s), contenders in %s, %s;\n",
		target, r.Events, r.Partitions, r.BatchSize, r.Rounds, where, pins)
	fmt.Fprintf(out, "%s %s, %d CPUs, load average %.2f at start, %.2f at end.\n", r.GoVersion, r.Platform, r.CPUs, r.LoadStart, r.LoadEnd)
	if len(r.Contenders) > 0 {
		fmt.Fprintf(out, "Contenders run (--contenders): %s.\n", strings.Join(r.Contenders, ", "))
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	brokerCol := ""
	if r.BrokerPID > 0 {
		brokerCol = "BROKER CPU µs/EVENT\t"
	}
	fmt.Fprintln(tw, "CONTENDER\tEVENTS/S\tCPU S/1M EVENTS\tCPU µs/EVENT\t"+brokerCol+"PEAK RSS MiB\tLIVE HEAP MiB\tOFFERED/S\tP50 ms\tP99 ms\tMAX ms\t")
	type row struct {
		name string
		c    *ContenderReport
	}
	var ran []row
	for _, c := range []row{{contenderPassThrough + " (kafka-go)", &r.PassThrough}, {contenderFranzGo, &r.FranzGo}, {contenderRouter, &r.Router},
		{r.auditName(contenderRouterAudit, r.AuditCompression), &r.RouterAudit},
		{r.auditName(contenderRouterAuditB, r.AuditCompressionB), r.RouterAuditB},
		{contenderRouterAlt + " (" + r.RouterCompressionAlt + ")", r.RouterAlt},
		{contenderFanOut, r.FanOut}, {contenderWriterPass, r.WriterPass}} {
		if !c.c.ran() {
			continue
		}
		ran = append(ran, c)
		lat := "-\t-\t-\t-"
		if l := c.c.Latency; l != nil {
			lat = fmt.Sprintf("%.0f\t%.1f\t%.1f\t%.1f", l.OfferedRate, l.P50Ms, l.P99Ms, l.MaxMs)
		}
		broker := ""
		if r.BrokerPID > 0 {
			broker = fmt.Sprintf("%.2f\t", c.c.BrokerCPUMicrosPerEvent)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%.2f\t%s%.0f\t%.0f\t%s\t\n", c.name, c.c.EventsPerSecond, c.c.CPUSecondsPerMillion,
			c.c.CPUMicrosPerEvent, broker, c.c.PeakRSSMiB, c.c.PeakLiveHeapMiB, lat)
	}
	_ = tw.Flush()
	fmt.Fprintln(out)
	if r.BrokerPID > 0 {
		// One tick of the broker's CPU time, spread over a round's events.
		tick := 1e6 / float64(max(r.BrokerClockTicks, 1)) / float64(max(r.Events, 1))
		fmt.Fprintf(out, "Broker CPU: process %d (%s), user+system from /proc/%d/stat over each contender's throughput span (first fetch to last commit), median of the rounds; "+
			"resolution %.3f µs per event (one 1/%d s tick over %d events); the latency passes are not measured.\n",
			r.BrokerPID, r.BrokerCommand, r.BrokerPID, tick, r.BrokerClockTicks, r.Events)
		for _, c := range ran {
			fmt.Fprintf(out, "Broker + contender CPU per event, %s: %.2f µs (broker %.2f, per round: %s; %s %.2f)\n", c.name, c.c.BrokerPlusCPUMicrosPerEvent,
				c.c.BrokerCPUMicrosPerEvent, joinFloats(c.c.RoundBrokerCPUMicrosPerEvent), c.name, c.c.CPUMicrosPerEvent)
		}
	}
	// A ratio's line appears when the contender it is about ran; if the
	// one it is taken against did not, the line says so.
	r.ratioLine(out, contenderRouter, contenderFranzGo, "Router / franz-go", "%.2f (per round: %s); router CPU per event / franz-go's: %.2f",
		r.RouterToFranzGo, joinFloats(r.RouterToFranzGoRounds), r.CPURouterToFranzGo)
	r.ratioLine(out, contenderRouter, contenderPassThrough, "Router / pass-through (kafka-go)", "%.2f (per round: %s)", r.Ratio, joinFloats(r.RoundRatios))
	r.ratioLine(out, contenderRouterAlt, contenderFranzGo, "Router with compression "+r.RouterCompressionAlt+" / franz-go",
		"%.2f (per round: %s); its CPU per event / franz-go's: %.2f", r.RouterAltToFranzGo, joinFloats(r.RouterAltToFranzGoRounds), r.CPURouterAltToFranzGo)
	r.ratioLine(out, contenderRouterAudit, contenderRouter, "Router with the audit on / router", "%.2f (per round: %s; issue 14 asks >= 0.9)",
		r.AuditRatio, joinFloats(r.AuditRounds))
	if r.RouterAuditB.ran() {
		toRouter := fmt.Sprintf("%.2f (per round: %s)", r.AuditRatioB, joinFloats(r.AuditRoundsB))
		if !r.Router.ran() {
			toRouter = notMeasured(contenderRouter)
		}
		toA := fmt.Sprintf("%.2f (per round: %s)", r.AuditBToA, joinFloats(r.AuditBToARounds))
		if !r.RouterAudit.ran() {
			toA = notMeasured(contenderRouterAudit)
		}
		fmt.Fprintf(out, "%s / router: %s; / %s: %s\n", r.auditName(contenderRouterAuditB, r.AuditCompressionB), toRouter,
			r.auditName(contenderRouterAudit, r.AuditCompression), toA)
	}
	r.ratioLine(out, contenderFanOut, contenderPassThrough, "Pass-through with fan-out and headers / pass-through", "%.2f", r.FanOutRatio)
	r.ratioLine(out, contenderWriterPass, contenderRouter, "Router / pass-through with the router's writer", "%.2f", r.RouterToWriterPass)
	if r.RateBasis != "" {
		fmt.Fprintf(out, "Latency passes offered %s.\n", r.RateBasis)
	}
	if len(r.Targets) == 0 {
		return
	}
	fmt.Fprintln(out, "\nIssue 16's targets:")
	tw = tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tMEASURED\tVERDICT\tCAVEAT")
	for _, c := range r.Targets {
		measured := fmt.Sprintf("%.2f %s", c.Measured, c.Unit)
		if c.Unit == "ms" || c.Unit == "MB" {
			measured = fmt.Sprintf("%.1f %s", c.Measured, c.Unit)
		}
		if c.Verdict == verdictNotMeasured {
			measured = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Target, measured, c.Verdict, c.Caveat)
	}
	_ = tw.Flush()
}

// ratioLine prints "label: " and the ratio (format, args) of contender
// about to contender against when both ran; "not measured" when against
// did not; nothing when about did not.
func (r *Report) ratioLine(out io.Writer, about, against, label, format string, args ...any) {
	if !r.contender(about).ran() {
		return
	}
	value := fmt.Sprintf(format, args...)
	if !r.contender(against).ran() {
		value = notMeasured(against)
	}
	fmt.Fprintf(out, "%s: %s\n", label, value)
}

// notMeasured is what the table says of a ratio taken against mode, which
// did not run.
func notMeasured(mode string) string { return "not measured (" + mode + " not run)" }

func joinFloats(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, ", ")
}
