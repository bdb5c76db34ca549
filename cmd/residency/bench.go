package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/residency-router/residency/internal/bench"
	"github.com/residency-router/residency/internal/config"
)

const benchSynopsis = `bench [--brokers HOST:PORT,...] [--events N] [--partitions P] [--json] [flags]

Measure what routing costs over moving the bytes. Creates topics, preloads N
canonical user events (single-object Avro; several jurisdictions, a few
percent unplaceable, a fraction of a percent malformed), then against the
same broker and partitions runs:
  (a) pass-through: plain kafka-go, consume and produce the same bytes to one
      topic with the router's batching and acks, no decoding;
  (b) router: the real router with the bench ruleset loaded (and, with
      --pins N, N pins loaded into Redis first and looked up there);
  franz-go: consume with kgo and produce the same bytes to one topic,
      acks=all and idempotent, committing after the acks, several polls in
      flight: the reference for what a Go client moves on this broker.
Throughput: each contender consumes the N preloaded events, rounds
interleaved (events/s from its first fetch to its last commit; CPU seconds
per million events, the same as µs per event, from getrusage; peak RSS from
VmHWM). Latency: each contender then moves events produced at a fixed rate
(default half the router's events/s), first for --latency-warmup untimed,
then for --latency-duration timed, in --latency-passes passes per contender
run A B C C B A, pooled; the latency of an event is its producer timestamp
to its append time at the destination (LogAppendTime). The report sets the
targets of issue 16 beside the figures (router / franz-go events/s >= 0.5,
CPU per event <= 2x franz-go's, p99 <= 25 ms, peak RSS <= 100 MB with a
million pins), each with pass or miss and where the run differs from the
target's. Each contender runs in a child process of this binary unless
--in-process; --cpuprofile DIR writes a CPU profile of each, --memprofile
DIR a heap profile at its largest live heap (the report gives each
contender's peak live heap beside its peak RSS). Without
--brokers it starts the embedded stack (and its Redis for --pins).
--diagnose adds two throughput contenders: the pass-through with the
router's fan-out and headers, and the pass-through with the router's writer.
--contenders LIST runs only the contenders named, comma-separated, by the
names the progress lines give them: pass-through (the kafka-go one),
franz-go, router, router+audit, and those the flags add (router+audit-b,
router-alt, pass-through+fan-out+headers, pass-through+router-writer),
e.g. --contenders router,franz-go; they run in the usual order whatever
the list's. A flag that adds contenders needs one of them named there;
so does one that configures only some (--audit-compression router+audit;
--pins, --router-compression, --max-inflight-events,
--max-uncommitted-events, --max-uncommitted-bytes and --memory-limit the
router contenders).
Ratios and targets that need a contender left out say "not measured"
(absent from --json); without the router, the latency passes need --rate.
--broker-pid PID (with --brokers; Linux) adds the broker's CPU: the
user+system CPU time of process PID, the broker on this host, read from
/proc/PID/stat (1/100 s ticks) where each contender reads its own, at its
first fetch and its last commit in every throughput round; the report
gives the broker's CPU µs per event of each contender (median of the
rounds; per round in --json) and the broker's plus the contender's, what
an event costs a host they share. Only the throughput rounds are
measured. --broker-pid auto takes the process of this host listening on
the first --brokers address's port.`

// runBench is `residency bench`.
func runBench(ctx context.Context, e env) int {
	fs := newFlags(e, "bench", benchSynopsis)
	brokers := fs.String("brokers", "", "bootstrap `addresses` of the Kafka cluster (comma-separated); default: start the embedded stack")
	remote := fs.String("remote-brokers", "", "a second cluster for the EU and UK pinned topics (default: every region on --brokers; with the embedded stack any value uses its second cluster)")
	o := bench.DefaultOptions()
	fs.IntVar(&o.Events, "events", o.Events, "events to preload and route in the throughput pass")
	fs.IntVar(&o.Partitions, "partitions", o.Partitions, "partitions of every topic")
	fs.IntVar(&o.Replication, "replication", o.Replication, "replication factor of every topic")
	fs.IntVar(&o.BatchSize, "batch-size", o.BatchSize, "events per batch, both contenders (router.batch_size)")
	fs.DurationVar(&o.Linger, "linger", o.Linger, "how long a batch waits for more events, both contenders")
	fs.Float64Var(&o.Rate, "rate", o.Rate, "offered rate of the latency pass in events/s (default: half the router's events/s)")
	fs.DurationVar(&o.LatencyFor, "latency-duration", o.LatencyFor, "how long the latency pass produces timed events, per contender")
	fs.DurationVar(&o.LatencyWarmup, "latency-warmup", o.LatencyWarmup, "how long the latency pass first produces at the offered rate without timing (0: no warm-up at rate)")
	fs.IntVar(&o.LatencyPasses, "latency-passes", o.LatencyPasses, "latency passes per contender, in the order A B B A ...; percentiles are over all their events")
	fs.IntVar(&o.Rounds, "rounds", o.Rounds, "throughput rounds; each runs every contender, in reverse order every other round")
	fs.BoolVar(&o.InProcess, "in-process", false, "run the contenders in this process (CPU and RSS then include everything else in it)")
	fs.BoolVar(&o.KeepTopics, "keep-topics", false, "do not delete the bench topics at the end")
	fs.DurationVar(&o.Timeout, "timeout", o.Timeout, "give up after this long")
	fs.Uint64Var(&o.Seed, "seed", o.Seed, "seed of the event mix")
	fs.StringVar(&o.CPUProfile, "cpuprofile", "", "write a CPU profile of each contender run into `dir` (child processes only), e.g. throughput-r1-router.pprof")
	fs.StringVar(&o.MemProfile, "memprofile", "", "write a heap profile of each contender run, taken at its largest live heap, into `dir` (child processes only), e.g. throughput-r1-router-heap.pprof")
	fs.IntVar(&o.MaxInflightEvents, "max-inflight-events", 0, "the router contenders' window in events, as router.max_inflight_events sets it for route (0: the router's default, 10000)")
	fs.StringVar(&o.RouterCompression, "router-compression", "", "compression of the router contenders' produce requests (none, gzip, snappy, lz4 or zstd), as kafka.compression sets it for route (default: the router's default)")
	fs.StringVar(&o.RouterCompressionAlt, "router-compression-alt", "", "add a contender: the router with this produce compression, in the same throughput rounds and latency passes as the router (default: none)")
	fs.IntVar(&o.MaxUncommittedEvents, "max-uncommitted-events", 0, "the router contenders' settled backlog in events, as router.max_uncommitted_events sets it for route (0: the router's default, 40000)")
	fs.IntVar(&o.MaxUncommittedBytes, "max-uncommitted-bytes", 0, "the router contenders' settled backlog in audit leaf `bytes`, as router.max_uncommitted_bytes sets it for route (0: the router's default, 16 MiB)")
	fs.Int64Var(&o.MemoryLimit, "memory-limit", 0, "Go soft memory limit of the router contenders in `bytes`, as router.memory_limit sets it for route (0: none)")
	fs.IntVar(&o.Pins, "pins", o.Pins, "load this many per-user pins into Redis first and route with pins on (0: pins off)")
	fs.StringVar(&o.Redis, "redis", "", "`host:port` of the Redis to load the pins into, no password (default: the embedded stack's; needed with --brokers and --pins)")
	fs.BoolVar(&o.Diagnose, "diagnose", false, "add two throughput contenders: the pass-through plus the router's fan-out to seven topics and its nine headers, without decoding; and the pass-through with the router's writer instead of kafka-go's")
	fs.StringVar(&o.AuditCompression, "audit-compression", "", "compression of router+audit's audit topic: none, gzip, snappy, lz4 or zstd (default: the audit log's, none)")
	fs.StringVar(&o.AuditCompressionB, "audit-compression-b", "", "add a contender, router+audit-b, whose audit topic has this compression, beside router+audit in every round (default: none)")
	fs.Func("contenders", "run only these contenders (comma-separated `list`, e.g. router,franz-go; default: all, with those the flags add)", func(s string) error {
		o.Contenders = append([]string{}, config.SplitList(s)...) // not nil: an empty list is refused, not taken for all
		return nil
	})
	brokerAuto := false
	fs.Func("broker-pid", "read the CPU time of the broker's process `pid` (on this host, Linux) over each throughput round and report the broker's CPU per event of each contender; auto: the process listening on the first --brokers address's port", func(s string) error {
		if s == "auto" {
			brokerAuto, o.BrokerPID = true, 0
			return nil
		}
		pid, err := strconv.Atoi(s)
		if err != nil || pid <= 0 {
			return errors.New("want a process id (a positive integer) or auto")
		}
		brokerAuto, o.BrokerPID = false, pid
		return nil
	})
	asJSON := fs.Bool("json", false, "print the report as JSON")
	child := fs.String("child", "", "internal: run one contender from a JSON spec")
	if code, ok := parseFlags(fs, e.args); !ok {
		return code
	}
	if *child != "" {
		if err := bench.RunChild(ctx, *child, e.stdout); err != nil {
			if errors.Is(err, bench.ErrSpec) {
				err = usageError{err}
			}
			return fail(e, "bench", err)
		}
		return exitOK
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(e.stderr, "residency bench: no arguments are taken")
		return exitUsage
	}
	o.Brokers, o.Remote = config.SplitList(*brokers), config.SplitList(*remote)
	if brokerAuto {
		if len(o.Brokers) == 0 {
			fmt.Fprintln(e.stderr, "residency bench: --broker-pid auto needs --brokers: the embedded stack's brokers run inside the bench's own process")
			return exitUsage
		}
		pid, err := bench.FindBrokerPID(o.Brokers[0])
		if err != nil {
			fmt.Fprintf(e.stderr, "residency bench: --broker-pid auto: %v\n", err)
			return exitUsage
		}
		o.BrokerPID = pid
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(e.stderr, "residency bench: %v\n", err)
		return exitUsage
	}
	progress := e.stderr
	if !*asJSON {
		progress = e.stdout
	}
	rep, err := bench.Run(ctx, o, progress, e.stderr)
	if err != nil {
		return fail(e, "bench", err)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail(e, "bench", err)
		}
		return exitOK
	}
	rep.Table(e.stdout)
	return exitOK
}
