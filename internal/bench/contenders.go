package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/auditwire"
	"github.com/residency-router/residency/connectors/kafka"
	redisconn "github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/router/rules"
	"github.com/residency-router/residency/schemas"
	"github.com/residency-router/residency/stream"
)

// The contenders of `residency bench`.
const (
	// contenderPassThrough is the plain kafka-go pass-through.
	contenderPassThrough = "pass-through"
	contenderRouter      = "router"
	// contenderRouterAudit is the router with the audit on: every record
	// attested, every decision leaf appended (acks=all) to a one-partition
	// audit topic before its offset is committed.
	contenderRouterAudit = "router+audit"
	// contenderRouterAuditB (--audit-compression-b) is router+audit with
	// another compression of its audit topic.
	contenderRouterAuditB = "router+audit-b"
	// contenderFranzGo is the franz-go pass-through: the reference for
	// what a Go client moves on the broker.
	contenderFranzGo = "franz-go"
	// contenderFanOut (--diagnose) is the pass-through plus what the
	// residency contract adds on the wire: each record goes to one of the
	// router's seven destination topics (by key) with nine residency
	// headers of the router's names and sizes, built without decoding.
	contenderFanOut = "pass-through+fan-out+headers"
	// contenderWriterPass (--diagnose) is the pass-through with the
	// router's writer (connectors/kafka: one produce request per broker)
	// instead of kafka-go's Writer (one per partition): router / it is what
	// the routing costs on the same produce path.
	contenderWriterPass = "pass-through+router-writer"
	// contenderRouterAlt (--router-compression-alt) is the router with
	// another produce compression, in the same rounds and latency passes
	// as the router: a comparison within one run.
	contenderRouterAlt = "router-alt"
)

// ChildEnv is set in the environment of contender child processes. The
// residency binary ignores it; a test binary that runs the harness (this
// package's) checks it in TestMain and runs RunChild instead of the tests,
// standing in for the binary.
const ChildEnv = "RESIDENCY_BENCH_CHILD"

// childSpec tells one contender run what to do. The parent passes it as
// JSON to `residency bench --child`.
type childSpec struct {
	Mode          string        `json:"mode"` // one of the contender* constants
	Brokers       []string      `json:"brokers"`
	RemoteBrokers []string      `json:"remote_brokers,omitempty"`
	Ingest        string        `json:"ingest"`
	Group         string        `json:"group"`
	Dest          string        `json:"dest,omitempty"`   // pass-through destination topic
	Prefix        string        `json:"prefix,omitempty"` // router: topic prefix of the bench ruleset
	Expect        int           `json:"expect"`           // stop after committing this many events
	BatchSize     int           `json:"batch_size"`
	Linger        time.Duration `json:"linger"`
	Timeout       time.Duration `json:"timeout"`
	CPUProfile    string        `json:"cpu_profile,omitempty"` // write a CPU profile of the run here
	// MemProfile, if set, is where the run writes a heap profile taken at
	// the largest live heap it reached (heapWatch).
	MemProfile string `json:"mem_profile,omitempty"`
	// MemoryLimit, if set, is the router contenders' Go soft memory limit
	// in bytes (router.memory_limit).
	MemoryLimit int64 `json:"memory_limit,omitempty"`
	// MaxInflightEvents, if set, is the router contenders' window in
	// events (router.max_inflight_events); 0: the router's default.
	MaxInflightEvents int `json:"max_inflight_events,omitempty"`
	// Compression, if set, is the router contenders' produce compression
	// (kafka.compression); "": the router's default.
	Compression string `json:"compression,omitempty"`
	// MaxUncommittedEvents, if set, is the router contenders' settled
	// backlog in events (router.max_uncommitted_events); 0: the router's
	// default.
	MaxUncommittedEvents int `json:"max_uncommitted_events,omitempty"`
	// MaxUncommittedBytes, if set, is the router contenders' settled
	// backlog in leaf bytes (router.max_uncommitted_bytes); 0: the
	// router's default.
	MaxUncommittedBytes int `json:"max_uncommitted_bytes,omitempty"`
	// RedisAddr and RedisPrefix: the router looks pins up in this Redis,
	// under this key prefix (connectors/redis.Rules); "": pins off.
	RedisAddr   string `json:"redis_addr,omitempty"`
	RedisPrefix string `json:"redis_prefix,omitempty"`
	// AuditCompression is the audit topic's compression of the audit
	// contenders; "": the audit log's default.
	AuditCompression string `json:"audit_compression,omitempty"`
	// BrokerPID, if set, is the broker's process (--broker-pid): the run
	// reads its CPU time where it reads its own (meter), at the first
	// fetch and the last commit.
	BrokerPID int `json:"broker_pid,omitempty"`
}

// childResult is what one contender run measured.
type childResult struct {
	Mode string `json:"mode"`
	// Events is how many events were committed.
	Events int `json:"events"`
	// Seconds is from the first fetched event to the commit of the last.
	Seconds float64 `json:"seconds"`
	// CPUSeconds is user+system CPU over the same span.
	CPUSeconds float64 `json:"cpu_seconds"`
	// PeakRSSBytes is the process's VmHWM at the end.
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
	// PeakLiveHeapBytes is the largest live heap (the heap marked live by
	// a completed GC cycle) seen during the run, sampled every 100ms.
	PeakLiveHeapBytes int64 `json:"peak_live_heap_bytes"`
	// Decisions counts the router's decisions by outcome ("routed",
	// "quarantined", "dead_lettered"), from its metrics; router only.
	Decisions map[string]int `json:"decisions,omitempty"`
	// BrokerCPUSeconds is the broker process's user+system CPU over the
	// same span as CPUSeconds (childSpec.BrokerPID; 0 without).
	BrokerCPUSeconds float64 `json:"broker_cpu_seconds,omitempty"`
}

// meter wraps what a contender fetches and commits: it notes the first
// fetch (time and CPU, and the broker's CPU with brokerPID) and signals
// when Expect events are committed, noting the same at that commit.
type meter struct {
	expect    int64
	brokerPID int // 0: the broker's CPU is not read
	committed atomic.Int64
	firstOnce sync.Once
	first     time.Time
	firstCPU  float64
	last      time.Time
	lastCPU   float64
	// firstBroker and lastBroker are the broker's CPU time in clock
	// ticks; brokerErr is the first failure to read them (read after
	// done).
	firstBroker, lastBroker uint64
	brokerErr               error
	done                    chan struct{}
}

func newMeter(expect, brokerPID int) *meter {
	return &meter{expect: int64(expect), brokerPID: brokerPID, done: make(chan struct{})}
}

func (m *meter) fetched() {
	m.firstOnce.Do(func() {
		m.first = time.Now()
		m.firstCPU = cpuSeconds()
		m.firstBroker = m.brokerCPU()
	})
}

func (m *meter) commit(n int) {
	if c := m.committed.Add(int64(n)); c >= m.expect && c-int64(n) < m.expect {
		m.last = time.Now()
		m.lastCPU = cpuSeconds()
		m.lastBroker = m.brokerCPU()
		close(m.done)
	}
}

// brokerCPU reads the broker's CPU time in clock ticks (0 without
// brokerPID), noting the first error.
func (m *meter) brokerCPU() uint64 {
	if m.brokerPID <= 0 {
		return 0
	}
	s, err := processCPUTicks(m.brokerPID)
	if err != nil && m.brokerErr == nil {
		m.brokerErr = fmt.Errorf("read the broker's CPU time (--broker-pid %d): %w", m.brokerPID, err)
	}
	return s
}

func (m *meter) result(mode string) (childResult, error) {
	if m.brokerErr != nil {
		return childResult{}, m.brokerErr
	}
	return childResult{Mode: mode, Events: int(m.committed.Load()), Seconds: m.last.Sub(m.first).Seconds(),
		CPUSeconds: m.lastCPU - m.firstCPU, PeakRSSBytes: peakRSS(),
		BrokerCPUSeconds: float64(m.lastBroker-m.firstBroker) / float64(clockTicksPerSecond())}, nil
}

// partMeter counts committed events from committed offsets: the router
// commits one offset per partition (the next to read), so the events it
// covers are the distance from the partition's previous commit (or from
// the first offset fetched). It works per run of records of one partition,
// not per record, so the meter costs the router's fetch stage next to
// nothing, as the other contenders' meters cost theirs.
type partMeter struct {
	mu   sync.Mutex
	base map[partKey]int64 // next offset not yet counted
}

// partKey names one partition of one topic.
type partKey struct {
	topic     string
	partition int
}

// fetched notes the first offset fetched of every partition in msgs.
func (p *partMeter) fetched(msgs []stream.Message) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i < len(msgs); {
		k := partKey{msgs[i].Topic, msgs[i].Partition}
		if _, ok := p.base[k]; !ok {
			p.base[k] = msgs[i].Offset
		}
		// Skip the rest of this partition's run: its offsets are later.
		for i++; i < len(msgs) && msgs[i].Partition == k.partition && msgs[i].Topic == k.topic; i++ {
		}
	}
}

// committed counts the events the committed offsets cover.
func (p *partMeter) committed(offsets []router.Offset) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, o := range offsets {
		k := partKey{o.Topic, o.Partition}
		if b, ok := p.base[k]; ok && o.Next > b {
			n += int(o.Next - b)
			p.base[k] = o.Next
		}
	}
	return n
}

// meteredConsumer is a router.BatchConsumer that feeds a meter.
type meteredConsumer struct {
	router.BatchConsumer
	m  *meter
	pm *partMeter
}

// Poll returns the next records and notes the first one of each partition.
func (c *meteredConsumer) Poll(ctx context.Context, dst []stream.Message, max int) ([]stream.Message, error) {
	n := len(dst)
	dst, err := c.BatchConsumer.Poll(ctx, dst, max)
	if len(dst) > n {
		c.m.fetched()
		c.pm.fetched(dst[n:])
	}
	return dst, err
}

// Commit commits offsets (each the next offset to read of its partition)
// and counts the events they cover.
func (c *meteredConsumer) Commit(ctx context.Context, offsets ...router.Offset) error {
	if err := c.BatchConsumer.Commit(ctx, offsets...); err != nil {
		return err
	}
	c.m.commit(c.pm.committed(offsets))
	return nil
}

// runContender runs one contender until spec.Expect events are committed.
func runContender(ctx context.Context, spec childSpec) (childResult, error) {
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	m := newMeter(spec.Expect, spec.BrokerPID)
	hw := startHeapWatch(spec.MemProfile != "")
	defer hw.halt()
	if spec.CPUProfile != "" {
		f, err := os.Create(spec.CPUProfile)
		if err != nil {
			return childResult{}, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return childResult{}, err
		}
		defer pprof.StopCPUProfile()
	}
	var err error
	var decisions map[string]int
	switch spec.Mode {
	case contenderPassThrough, contenderFanOut, contenderWriterPass:
		err = runPassThrough(ctx, spec, m)
	case contenderFranzGo:
		err = runFranzGo(ctx, spec, m)
	case contenderRouter, contenderRouterAudit, contenderRouterAuditB, contenderRouterAlt:
		decisions, err = runBenchRouter(ctx, spec, m)
	default:
		err = fmt.Errorf("%w: unknown contender %q", ErrSpec, spec.Mode)
	}
	if err != nil {
		return childResult{}, err
	}
	res, err := m.result(spec.Mode)
	if err != nil {
		return childResult{}, err
	}
	res.Decisions = decisions
	var err2 error
	res.PeakLiveHeapBytes, err2 = hw.stop(spec.MemProfile)
	return res, err2
}

// runPassThrough is contender (a): plain kafka-go, no decoding. It consumes
// the ingest topic as a consumer group with the settings connectors/kafka
// gives the router's reader, and produces each batch's records (key, value,
// headers, timestamp unchanged) to one topic with the settings of the
// router's writers (acks from all in-sync replicas, hash partitioning, the
// same batch size and 1ms batch timeout), then commits, like the router.
func runPassThrough(ctx context.Context, spec childSpec, m *meter) error {
	r := kafkago.NewReader(kafkago.ReaderConfig{
		Brokers: spec.Brokers, GroupID: spec.Group, GroupTopics: []string{spec.Ingest},
		StartOffset: kafkago.FirstOffset, SessionTimeout: 10 * time.Second, HeartbeatInterval: time.Second,
		RebalanceTimeout: 10 * time.Second, JoinGroupBackoff: time.Second, MaxWait: 500 * time.Millisecond,
		MinBytes: 1, MaxBytes: 4 << 20, QueueCapacity: 1000, CommitInterval: 0,
		ReadBackoffMin: 50 * time.Millisecond, ReadBackoffMax: 500 * time.Millisecond,
		GroupBalancers: []kafkago.GroupBalancer{kafkago.RangeGroupBalancer{}, kafkago.RoundRobinGroupBalancer{}},
	})
	defer r.Close()
	w := &kafkago.Writer{
		Addr: kafkago.TCP(spec.Brokers...), Balancer: &kafkago.Hash{}, RequiredAcks: kafkago.RequireAll,
		BatchSize: spec.BatchSize, BatchBytes: 1 << 20, BatchTimeout: time.Millisecond,
		WriteTimeout: 10 * time.Second, ReadTimeout: 10 * time.Second, MaxAttempts: 3,
		WriteBackoffMin: 20 * time.Millisecond, WriteBackoffMax: 500 * time.Millisecond,
	}
	defer w.Close()
	publish := func(ctx context.Context, msgs []kafkago.Message) error { return writeRetry(ctx, w, msgs) }
	if spec.Mode == contenderWriterPass {
		var err error
		if publish, err = routerWriterPublish(spec); err != nil {
			return err
		}
	}
	batch := make([]kafkago.Message, 0, spec.BatchSize)
	out := make([]kafkago.Message, 0, spec.BatchSize)
	type tp struct {
		topic string
		part  int
	}
	high := map[tp]int64{}
	// For contenderFanOut: the destinations and the headers.
	var dests []string
	for _, d := range []string{"us", "eu", "uk", "in", "br", "quarantine", "dead-letter"} {
		dests = append(dests, spec.Prefix+"."+d)
	}
	fixed := []kafkago.Header{{Key: router.HeaderJurisdiction, Value: []byte("EU")}, {Key: router.HeaderRegion, Value: []byte("eu")},
		{Key: router.HeaderRulesetVersion, Value: []byte("1")}, {Key: router.HeaderDecidedBy, Value: []byte("country")},
		{Key: router.HeaderRouter, Value: []byte("bench")}}
	topic := []byte(spec.Ingest)
	var arena []byte
	for {
		select {
		case <-m.done:
			return nil
		default:
		}
		batch = batch[:0]
		first, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("pass-through: fetch: %w", err)
		}
		m.fetched()
		batch = append(batch, first)
		lctx, lcancel := context.WithTimeout(ctx, spec.Linger)
		for len(batch) < spec.BatchSize {
			msg, err := r.FetchMessage(lctx)
			if err != nil {
				if lctx.Err() != nil && ctx.Err() == nil {
					break
				}
				lcancel()
				return fmt.Errorf("pass-through: fetch: %w", err)
			}
			batch = append(batch, msg)
		}
		lcancel()
		out = out[:0]
		if spec.Mode == contenderFanOut {
			arena = arena[:0]
			for _, msg := range batch {
				hs := make([]kafkago.Header, 0, len(msg.Headers)+len(fixed)+3)
				hs = append(append(hs, msg.Headers...), fixed...)
				a := len(arena)
				arena = strconv.AppendInt(arena, int64(msg.Partition), 10)
				b := len(arena)
				arena = strconv.AppendInt(arena, msg.Offset, 10)
				hs = append(hs, kafkago.Header{Key: router.HeaderSourceTopic, Value: topic},
					kafkago.Header{Key: router.HeaderSourcePartition, Value: arena[a:b:b]},
					kafkago.Header{Key: router.HeaderSourceOffset, Value: arena[b:len(arena):len(arena)]})
				out = append(out, kafkago.Message{Topic: dests[fnv32(msg.Key)%uint32(len(dests))], Key: msg.Key, Value: msg.Value, Headers: hs, Time: msg.Time})
			}
		} else {
			for _, msg := range batch {
				out = append(out, kafkago.Message{Topic: spec.Dest, Key: msg.Key, Value: msg.Value, Headers: msg.Headers, Time: msg.Time})
			}
		}
		if err := publish(ctx, out); err != nil {
			return fmt.Errorf("pass-through: produce: %w", err)
		}
		clear(high)
		for _, msg := range batch {
			k := tp{msg.Topic, msg.Partition}
			if o, ok := high[k]; !ok || msg.Offset > o {
				high[k] = msg.Offset
			}
		}
		ks := make([]kafkago.Message, 0, len(high))
		for k, o := range high {
			ks = append(ks, kafkago.Message{Topic: k.topic, Partition: k.part, Offset: o})
		}
		if err := r.CommitMessages(ctx, ks...); err != nil {
			return fmt.Errorf("pass-through: commit: %w", err)
		}
		m.commit(len(batch))
	}
}

// runBenchRouter is contender (b): the real router (connectors/kafka reader
// and writers, the schemas extractor, router metrics) with the bench
// ruleset from a static source behind the fail-closed cache and, when
// spec names a Redis, pins looked up there (rules.Pins over
// connectors/redis.Rules, as `residency route` wires them). It returns the
// router's decisions by outcome, from its metrics.
func runBenchRouter(ctx context.Context, spec childSpec, m *meter) (map[string]int, error) {
	if spec.MemoryLimit > 0 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(spec.MemoryLimit))
	}
	rs, err := rules.Parse([]byte(benchRulesYAML(spec.Prefix, len(spec.RemoteBrokers) > 0)))
	if err != nil {
		return nil, fmt.Errorf("bench ruleset: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := prometheus.NewRegistry()
	cache := rules.NewCache(rules.NewStaticSource(rs), rules.CacheOptions{Registerer: reg, Logger: log})
	fields, err := schemas.NewExtractor(schemas.ExtractorConfig{})
	if err != nil {
		return nil, err
	}
	// The router as `residency route` wires it: the batch Consumer and one
	// idempotent Producer per cluster.
	ingest := kafka.Cluster{Name: "ingest", Brokers: spec.Brokers}
	var revoked func(context.Context, []router.Partition)
	cons, err := kafka.NewConsumer(kafka.ConsumerConfig{Cluster: ingest, GroupID: spec.Group, Topics: []string{spec.Ingest},
		Logger: log, OnRevoke: kafka.RevokeHook(&revoked)})
	if err != nil {
		return nil, err
	}
	defer cons.Close(context.Background())
	clusters := map[string]kafka.Cluster{"ingest": ingest}
	if len(spec.RemoteBrokers) > 0 {
		clusters["remote"] = kafka.Cluster{Name: "remote", Brokers: spec.RemoteBrokers}
	}
	prods := map[string]router.AsyncProducer{}
	for name, cl := range clusters {
		p, err := kafka.NewProducer(kafka.ProducerConfig{Cluster: cl, BatchSize: spec.BatchSize, Compression: spec.Compression, Logger: log})
		if err != nil {
			return nil, err
		}
		defer p.Close()
		prods[name] = p.RouterProducer()
	}
	var consumer router.BatchConsumer = &meteredConsumer{BatchConsumer: cons.RouterConsumer(), m: m, pm: &partMeter{base: map[partKey]int64{}}}
	if path := os.Getenv("RESIDENCY_BENCH_TRACE"); path != "" {
		tr := newStageTrace()
		defer tr.write(path)
		tr.reg, tr.name = reg, spec.Mode
		consumer = &tracedConsumer{BatchConsumer: consumer, t: tr}
		for name, p := range prods {
			prods[name] = &tracedProducer{AsyncProducer: p, t: tr}
		}
	}
	cfg := router.Config{
		Consumer: consumer, Producers: prods, IngestCluster: "ingest",
		IngestTopics:    []string{spec.Ingest},
		QuarantineTopic: spec.Prefix + ".quarantine", DeadLetterTopic: spec.Prefix + ".dead-letter",
		Fields: fields, Rules: cache, Instance: "bench", BatchSize: spec.BatchSize, Linger: spec.Linger,
		Logger: log, Metrics: router.NewMetrics(reg), MaxInflightEvents: spec.MaxInflightEvents,
		MaxUncommittedEvents: spec.MaxUncommittedEvents, MaxUncommittedBytes: spec.MaxUncommittedBytes,
	}
	bg, stopBackground := context.WithCancel(ctx)
	defer stopBackground()
	if spec.RedisAddr != "" {
		client, err := redisconn.NewClient(redisconn.Config{Addr: spec.RedisAddr}, redisconn.ClientOptions{})
		if err != nil {
			return nil, err
		}
		defer client.Close()
		pins := rules.NewPins(redisconn.NewRules(client, spec.RedisPrefix), rules.PinsOptions{Registerer: reg})
		go func() { _ = pins.Run(bg) }()
		cfg.Pins = pins
	}
	if spec.Mode == contenderRouterAudit || spec.Mode == contenderRouterAuditB {
		al, err := kafka.NewAuditLog(kafka.AuditLogConfig{Cluster: ingest, Topic: spec.Prefix + ".audit",
			Compression: spec.AuditCompression, Logger: log})
		if err != nil {
			return nil, err
		}
		defer func() { _ = al.Close(context.Background()) }()
		subjects, err := audit.NewPseudonymizer([]byte("bench-subject-key-bench-subject-key"))
		if err != nil {
			return nil, err
		}
		if cfg.Ledger, err = auditwire.NewLedger(al, auditwire.LedgerConfig{Actor: "bench", Subjects: subjects}); err != nil {
			return nil, err
		}
		if cfg.Attester, err = auditwire.NewAttester(audit.AttestKey{ID: "bench", Secret: []byte("bench-attestation-key-bench-attestation")}); err != nil {
			return nil, err
		}
	}
	r, err := router.New(cfg)
	if err != nil {
		return nil, err
	}
	revoked = r.Revoked
	go func() { _ = cache.Run(bg) }()
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	select {
	case <-m.done:
		stop()
		if err := <-done; err != nil {
			return nil, err
		}
		return decisionCounts(reg)
	case err := <-done:
		if err == nil {
			err = cmp.Or(ctx.Err(), errors.New("no error reported"))
		}
		return nil, fmt.Errorf("router stopped before committing %d events: %w", spec.Expect, err)
	}
}

// decisionCounts sums the router's decision counters in reg by outcome.
func decisionCounts(reg *prometheus.Registry) (map[string]int, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, fmt.Errorf("router metrics: %w", err)
	}
	out := map[string]int{"routed": 0, "quarantined": 0, "dead_lettered": 0}
	for _, mf := range mfs {
		var outcome string
		switch mf.GetName() {
		case "residency_router_routed_events_total":
			outcome = "routed"
		case "residency_router_quarantined_events_total":
			outcome = "quarantined"
		case "residency_router_dead_lettered_events_total":
			outcome = "dead_lettered"
		default:
			continue
		}
		for _, m := range mf.GetMetric() {
			out[outcome] += int(m.GetCounter().GetValue())
		}
	}
	return out, nil
}

// runFranzGo is the franz-go pass-through, the reference for what a Go
// client moves on the broker: kgo consumes the ingest topic as a consumer
// group (offsets committed by hand) and produces each record's key, value,
// headers and timestamp unchanged to one topic, with acks from all in-sync
// replicas and idempotence (kgo's default), no compression (as the other
// contenders), and the bench's linger. It does not stop and wait: polls of
// up to BatchSize records are produced while earlier ones are still in
// flight (at most franzInFlight polls), and what every record of a poll
// and of the polls before it had acknowledged is committed, in order, in
// as few commits as it can.
func runFranzGo(ctx context.Context, spec childSpec, m *meter) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(spec.Brokers...),
		kgo.ConsumerGroup(spec.Group), kgo.ConsumeTopics(spec.Ingest), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(), kgo.SessionTimeout(10*time.Second), kgo.HeartbeatInterval(time.Second),
		kgo.RebalanceTimeout(10*time.Second), kgo.FetchMaxWait(500*time.Millisecond),
		kgo.DefaultProduceTopic(spec.Dest), kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerLinger(spec.Linger), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return fmt.Errorf("franz-go: %w", err)
	}
	defer cl.Close()
	inflight := make(chan *franzPoll, franzInFlight)
	committed := make(chan error, 1)
	go func() { committed <- franzCommit(ctx, cl, spec.Ingest, inflight, m) }()
	var tr *stageTrace
	if path := os.Getenv("RESIDENCY_BENCH_TRACE"); path != "" {
		tr = newStageTrace()
		tr.name = spec.Mode
		defer tr.write(path)
	}
	for polled := 0; polled < spec.Expect; {
		fs := cl.PollRecords(ctx, spec.BatchSize)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("franz-go: poll: %w", err)
		}
		var ferr error
		fs.EachError(func(topic string, part int32, err error) {
			ferr = cmp.Or(ferr, fmt.Errorf("%s/%d: %w", topic, part, err))
		})
		if ferr != nil {
			return fmt.Errorf("franz-go: poll: %w", ferr)
		}
		recs := fs.Records()
		if len(recs) == 0 {
			continue
		}
		m.fetched()
		p := &franzPoll{offsets: map[int32]kgo.EpochOffset{}, n: len(recs), done: make(chan struct{})}
		p.left.Store(int64(len(recs)))
		for _, r := range recs {
			if o := p.offsets[r.Partition]; r.Offset+1 > o.Offset {
				p.offsets[r.Partition] = kgo.EpochOffset{Epoch: r.LeaderEpoch, Offset: r.Offset + 1}
			}
		}
		select {
		case inflight <- p:
		case err := <-committed:
			return cmp.Or(err, errors.New("franz-go: the committer stopped"))
		case <-ctx.Done():
			return fmt.Errorf("franz-go: %w", ctx.Err())
		}
		if tr != nil {
			tr.franzPolled(recs)
		}
		for _, r := range recs {
			acked := p.acked
			if tr != nil {
				acked = tr.franzAcked(p.acked)
			}
			cl.Produce(ctx, &kgo.Record{Key: r.Key, Value: r.Value, Headers: r.Headers, Timestamp: r.Timestamp}, acked)
		}
		polled += len(recs)
	}
	close(inflight)
	return <-committed
}

// franzInFlight is how many polls the franz-go pass-through has produced
// but not committed at most.
const franzInFlight = 16

// franzPoll is one poll of the franz-go pass-through: the offsets to
// commit once every one of its n records is acknowledged.
type franzPoll struct {
	offsets map[int32]kgo.EpochOffset // next offset to read, by partition
	n       int
	left    atomic.Int64
	err     atomic.Pointer[error]
	done    chan struct{} // closed when every record is acknowledged or failed
}

// acked is the produce callback of each record of p.
func (p *franzPoll) acked(_ *kgo.Record, err error) {
	if err != nil {
		p.err.CompareAndSwap(nil, &err)
	}
	if p.left.Add(-1) == 0 {
		close(p.done)
	}
}

// franzCommit commits the polls of inflight (of topic) in order: it waits for the
// oldest to be acknowledged, takes with it every later one already
// acknowledged, commits their offsets in one request, counts them on m
// and goes on until inflight is closed and drained. A failed produce or
// commit ends it with the error.
func franzCommit(ctx context.Context, cl *kgo.Client, topic string, inflight <-chan *franzPoll, m *meter) error {
	var held *franzPoll // received, not yet acknowledged
	for {
		p := held
		held = nil
		if p == nil {
			var ok bool
			if p, ok = <-inflight; !ok {
				return nil
			}
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			return fmt.Errorf("franz-go: wait for acks: %w", ctx.Err())
		}
		offsets, n := map[int32]kgo.EpochOffset{}, 0
		take := func(p *franzPoll) error {
			if err := p.err.Load(); err != nil {
				return fmt.Errorf("franz-go: produce: %w", *err)
			}
			for part, o := range p.offsets {
				offsets[part] = o // polls are in order: later is higher
			}
			n += p.n
			return nil
		}
		if err := take(p); err != nil {
			return err
		}
	more:
		for {
			select {
			case q, ok := <-inflight:
				if !ok {
					break more
				}
				select {
				case <-q.done:
					if err := take(q); err != nil {
						return err
					}
				default:
					held = q
					break more
				}
			default:
				break more
			}
		}
		var cerr error
		cl.CommitOffsetsSync(ctx, map[string]map[int32]kgo.EpochOffset{topic: offsets},
			func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
				cerr = err
				if err != nil || resp == nil {
					return
				}
				for _, t := range resp.Topics {
					for _, p := range t.Partitions {
						if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
							cerr = cmp.Or(cerr, fmt.Errorf("%s/%d: %w", t.Topic, p.Partition, e))
						}
					}
				}
			})
		if cerr != nil {
			return fmt.Errorf("franz-go: commit: %w", cerr)
		}
		m.commit(n)
	}
}

// benchRulesYAML is the bench ruleset: five jurisdictions over five regions
// whose pinned topics start with prefix. With remote, EU and UK live on the
// "remote" cluster, as in the demo; otherwise every region is on the ingest
// cluster, so the router and the pass-through write to the same broker.
func benchRulesYAML(prefix string, remote bool) string {
	far := "ingest"
	if remote {
		far = "remote"
	}
	return strings.NewReplacer("PREFIX", prefix, "FAR", far).Replace(`
jurisdictions:
  - {name: US, region: us, countries: [US, PR, GU, VI, AS, MP, UM]}
  - name: EU
    region: eu
    countries: [AT, BE, BG, HR, CY, CZ, DK, EE, FI, FR, DE, GR, HU, IE,
                IT, LV, LT, LU, MT, NL, PL, PT, RO, SK, SI, ES, SE]
  - {name: UK, region: uk, countries: [GB, JE, GG, IM]}
  - {name: IN, region: in, countries: [IN]}
  - {name: BR, region: br, countries: [BR]}
regions:
  - {name: us, cluster: ingest, topic: PREFIX.us}
  - {name: eu, cluster: FAR, topic: PREFIX.eu}
  - {name: uk, cluster: FAR, topic: PREFIX.uk}
  - {name: in, cluster: ingest, topic: PREFIX.in}
  - {name: br, cluster: ingest, topic: PREFIX.br}
stores:
  - {name: us-store, regions: [us]}
  - {name: eu-store, regions: [eu]}
  - {name: uk-store, regions: [uk]}
  - {name: in-store, regions: [in]}
  - {name: br-store, regions: [br]}
`)
}

// ErrSpec: RunChild was given a spec that is not one of a contender run.
var ErrSpec = errors.New("bench: bad contender spec")

// RunChild is `residency bench --child SPEC`: it runs the one contender
// specJSON describes (the harness starts the residency binary so, see
// startContender) and prints its result as JSON on stdout.
func RunChild(ctx context.Context, specJSON string, stdout io.Writer) error {
	var spec childSpec
	if err := json.Unmarshal([]byte(specJSON), &spec); err != nil {
		return fmt.Errorf("%w: %w", ErrSpec, err)
	}
	res, err := runContender(ctx, spec)
	if err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(res)
}

// startContender runs spec in a child process of this binary (clean CPU
// and peak-RSS figures) or, with inProcess, in a goroutine (CPU and RSS are
// then the whole process's). wait returns the contender's result.
func startContender(ctx context.Context, spec childSpec, inProcess bool, stderr io.Writer) (wait func() (childResult, error), err error) {
	if inProcess {
		ch := make(chan struct{})
		var res childResult
		var rerr error
		go func() {
			defer close(ch)
			res, rerr = runContender(ctx, spec)
		}()
		return func() (childResult, error) { <-ch; return res, rerr }, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, "bench", "--child", string(b))
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	var out strings.Builder
	cmd.Stdout = &out
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the %s contender: %w", spec.Mode, err)
	}
	return func() (childResult, error) {
		if err := cmd.Wait(); err != nil {
			return childResult{}, fmt.Errorf("%s contender: %w", spec.Mode, err)
		}
		var res childResult
		if err := json.Unmarshal([]byte(out.String()), &res); err != nil {
			return childResult{}, fmt.Errorf("%s contender printed %q: %w", spec.Mode, out.String(), err)
		}
		return res, nil
	}, nil
}

// writeRetry writes msgs with w and, like the router's publish retries,
// writes again those that failed (e.g. Not Leader For Partition while a
// new topic's leadership settles) with a growing backoff, for up to two
// minutes. Records written before a retry are not written again.
// routerWriterPublish returns a publish function for contenderWriterPass:
// the router's writer with the router's writer settings, retrying a failed
// call as the router does.
func routerWriterPublish(spec childSpec) (func(context.Context, []kafkago.Message) error, error) {
	kw, err := kafka.NewWriter(kafka.WriterConfig{Cluster: kafka.Cluster{Name: "ingest", Brokers: spec.Brokers},
		BatchSize: spec.BatchSize, BatchBytes: 1 << 20, WriteTimeout: 10 * time.Second,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return nil, err
	}
	var rms []stream.Message
	return func(ctx context.Context, msgs []kafkago.Message) error {
		rms = rms[:0]
		for i := range msgs {
			k := &msgs[i]
			// kafka-go's and the router's headers have the same layout.
			hs := unsafe.Slice((*stream.Header)(unsafe.Pointer(unsafe.SliceData(k.Headers))), len(k.Headers))
			rms = append(rms, stream.Message{Topic: k.Topic, Key: k.Key, Value: k.Value, Headers: hs, Time: k.Time})
		}
		return retryBench(ctx, func() error { return kw.Publish(ctx, rms...) })
	}, nil
}

// The conversion above relies on it (this does not compile otherwise).
var _ = kafkago.Header(stream.Header{})

func writeRetry(ctx context.Context, w *kafkago.Writer, msgs []kafkago.Message) error {
	err := retryBench(ctx, func() error {
		err := w.WriteMessages(ctx, msgs...)
		var we kafkago.WriteErrors
		if errors.As(err, &we) && len(we) == len(msgs) {
			var failed []kafkago.Message
			for i, e := range we {
				if e != nil {
					failed = append(failed, msgs[i])
				}
			}
			msgs = failed // the next attempt sends only these
		}
		return err
	})
	if err != nil {
		return summarizeWriteError(err)
	}
	return nil
}

// retryBench calls try until it succeeds, ctx ends or two minutes have
// passed, with the router's retry policy (router.DefaultRetry: 50ms, 100ms,
// ... up to 2s in between).
func retryBench(ctx context.Context, try func() error) error {
	return router.DefaultRetry.Do(ctx, "produce", func(context.Context) error { return try() })
}

// summarizeWriteError shortens kafka-go's per-record errors to one.
func summarizeWriteError(err error) error {
	var we kafkago.WriteErrors
	if !errors.As(err, &we) {
		return err
	}
	for _, e := range we {
		if e != nil {
			return fmt.Errorf("%d of %d records failed, e.g.: %w", we.Count(), len(we), e)
		}
	}
	return err
}

// fnv32 is FNV-1a of b.
func fnv32(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return h
}
