package kafka

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	listOffsetsAPI "github.com/segmentio/kafka-go/protocol/listoffsets"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/residency-router/residency/stream"
)

// ErrNotAssigned is returned by Consumer.Commit for partitions this member
// does not hold (any more): their offsets are not committed.
var ErrNotAssigned = errors.New("kafka: partition not assigned to this member")

// ErrClosed is returned by the Consumer's and the Producer's methods once
// Close has been called.
var ErrClosed = errors.New("kafka: closed")

// TopicPartition names one partition of a topic.
type TopicPartition struct {
	// Topic is the topic name.
	Topic string
	// Partition is the partition id.
	Partition int
}

// String returns "topic[partition]".
func (tp TopicPartition) String() string { return fmt.Sprintf("%s[%d]", tp.Topic, tp.Partition) }

// Offset is a position to commit: Next is the offset of the next record
// to read from the partition, the offset of the last processed record + 1.
type Offset struct {
	// Topic is the topic name.
	Topic string
	// Partition is the partition id.
	Partition int
	// Next is the offset of the next record to read.
	Next int64
}

// OffsetsAfter returns, per partition of msgs, the offset after the
// highest of msgs (what to commit once they are all processed), in the
// order the partitions first appear.
func OffsetsAfter(msgs ...stream.Message) []Offset {
	var out []Offset
	for i := range msgs {
		m := &msgs[i]
		k := -1
		for j := range out {
			if out[j].Partition == m.Partition && out[j].Topic == m.Topic {
				k = j
				break
			}
		}
		if k < 0 {
			out = append(out, Offset{Topic: m.Topic, Partition: m.Partition, Next: m.Offset + 1})
		} else if m.Offset+1 > out[k].Next {
			out[k].Next = m.Offset + 1
		}
	}
	return out
}

// Position is what the Consumer knows of one assigned partition.
type Position struct {
	// Topic is the topic name.
	Topic string
	// Partition is the partition id.
	Partition int
	// Fetched is the offset the next fetch starts at (records before it
	// are fetched, not necessarily handed out by Poll yet); -1 before the
	// start offset is known.
	Fetched int64
	// HighWaterMark is the partition's high-water mark at the last fetch
	// (-1 before the first).
	HighWaterMark int64
}

// Defaults of ConsumerConfig's fetch sizes.
const (
	// DefaultFetchMaxBytes is the default of ConsumerConfig.FetchMaxBytes.
	DefaultFetchMaxBytes = 2 << 20
	// DefaultPartitionMaxBytes is the default of
	// ConsumerConfig.PartitionMaxBytes.
	DefaultPartitionMaxBytes = 512 << 10
)

// ConsumerConfig configures a Consumer.
type ConsumerConfig struct {
	// Cluster is the cluster holding the topics. Required.
	Cluster Cluster
	// GroupID is the consumer group. Required.
	GroupID string
	// Topics are the topics to read. Required.
	Topics []string
	// StartOffset is where a partition starts when the group has no
	// committed offset for it, and where it restarts when its offset is out
	// of range (deleted by retention, or past the end after an unclean
	// leader election): "earliest" or "latest". Default "earliest"
	// (nothing is skipped that still exists).
	StartOffset string
	// IsolationLevel is "read_uncommitted" (every record, also of open and
	// aborted transactions) or "read_committed" (records of committed
	// transactions and non-transactional ones only, up to the last stable
	// offset). Control records are never returned. Default
	// "read_uncommitted".
	IsolationLevel string
	// SessionTimeout is the group session timeout. Default 10s.
	SessionTimeout time.Duration
	// HeartbeatInterval is the group heartbeat interval; a rebalance is
	// noticed at the next heartbeat. Default 1s.
	HeartbeatInterval time.Duration
	// RebalanceTimeout is how long the group waits for its members to
	// rejoin during a rebalance; OnRevoke must return well within it.
	// Default 10s.
	RebalanceTimeout time.Duration
	// JoinGroupBackoff is the wait before rejoining after a group error.
	// Default 1s.
	JoinGroupBackoff time.Duration
	// MaxWait is the longest a fetch waits on the broker for records.
	// Default 500ms.
	MaxWait time.Duration
	// FetchMaxBytes is the most bytes one fetch response holds (the broker
	// may exceed it to return at least one record batch). With one fetch in
	// flight and one fetched ahead of Poll per broker, a consumer buffers at
	// most about 2 × FetchMaxBytes per broker; the records are copied out of
	// the response per batch (small batches share 64 KiB chunks), so a
	// record held (the router: until it is settled) keeps its batch's copy
	// in memory, not the whole response. Default 2 MiB.
	FetchMaxBytes int
	// PartitionMaxBytes is the most bytes of one partition in one fetch
	// response (the broker may exceed it to return at least one record
	// batch). Default 512 KiB.
	PartitionMaxBytes int
	// RequestTimeout bounds a request to a broker (a fetch: MaxWait plus
	// this). Default 30s.
	RequestTimeout time.Duration
	// OnRevoke, when set, is called when the member is about to give up
	// its partitions: at a rebalance (every partition: the group uses the
	// eager protocol), after a lost session, and at Close. It runs inside
	// Poll, in the caller's goroutine (as Java's onPartitionsRevoked), so
	// every record Poll returned before has reached the caller, and no
	// record of those partitions is returned after: the caller can wait
	// for what it has in flight and commit it (Commit works within the
	// hook; its ctx ends at RebalanceTimeout - 1s). The member rejoins the
	// group once it returns. If the caller does not call Poll within
	// RebalanceTimeout/2 of the rebalance, the partitions are given up
	// without it (what was processed and not committed is then read again
	// by the next owner: duplicates, never a loss). At Close it runs in
	// Close's goroutine, with Close's ctx. Default: none.
	OnRevoke func(ctx context.Context, revoked []TopicPartition)
	// Logger receives the consumer's warnings (fetch errors, offset
	// resets, rebalances; never record contents). Default: slog.Default().
	Logger *slog.Logger

	dial dialFunc // tests: route connections through a proxy
}

// Consumer is a consumer-group member that fetches in batches: one fetch
// request per broker for all the partitions it leads, one more fetched
// ahead while the caller handles the current one, and records decoded in
// bulk from a copy of each record batch taken when the response is parsed
// (keys, values and header values alias it; small batches share 64 KiB
// chunks; headers come from one slab per response; the response's own
// buffer is recycled at once), without an allocation per record.
//
// Membership, assignments and offset commits go through kafka-go's
// ConsumerGroup; fetching, offset resolution and metadata through the
// consumer's own connections. Commits are explicit and synchronous
// (Commit); nothing is committed automatically.
//
// Poll is meant for one goroutine; Commit, Assigned, Joined, Positions and
// Err may be called from any.
type Consumer struct {
	cfg           ConsumerConfig
	log           *slog.Logger
	w             *wire
	cg            *kafka.ConsumerGroup
	isolation     int8
	start         int64 // offsetEarliest or offsetLatest
	maxWait       time.Duration
	reqTimeout    time.Duration
	maxBytes      int
	partMaxBytes  int
	rebalanceWait time.Duration

	base     context.Context
	stop     context.CancelFunc
	closing  chan struct{}
	closed   atomic.Bool
	closeCtx atomic.Pointer[context.Context]
	groupEnd chan struct{}

	mu      sync.Mutex
	genSeq  uint64
	gen     *cgen // the current generation, until its revocation is over
	revoked *cgen // a generation whose OnRevoke Poll should run
	queue   []*fetchResult
	cur     *fetchResult
	pollErr error // returned once by Poll
	fatal   error // returned by every Poll
	errs    map[string]error
	ready   chan struct{}
	joined  atomic.Bool

	// gens counts the generations' revoke functions not yet returned:
	// Close waits for them (kafka-go's does not wait for one started on a
	// generation that ended just as it was handed over).
	gens sync.WaitGroup
}

const (
	offsetEarliest = -2 // ListOffsets timestamp of the log start
	offsetLatest   = -1 // ListOffsets timestamp of the log end
)

// cgen is one generation of the group as this member sees it.
type cgen struct {
	seq        uint64
	kg         *kafka.Generation
	parts      []*partFetch
	assigned   []TopicPartition
	held       map[TopicPartition]bool
	delivering bool // Poll may return its records (false once revoked)
	cancel     context.CancelFunc
	done       chan struct{} // its fetch manager has stopped

	hookOnce   sync.Once
	hookDone   chan struct{} // OnRevoke has returned (or was skipped)
	hookCtx    context.Context
	hookCancel context.CancelFunc
}

// NewConsumer validates cfg and starts a consumer: it joins the group and
// fetches in the background; Poll returns the records.
func NewConsumer(cfg ConsumerConfig) (*Consumer, error) {
	if err := cfg.Cluster.Validate("cluster"); err != nil {
		return nil, err
	}
	if cfg.GroupID == "" {
		return nil, fmt.Errorf("%w: group_id: required", ErrConfig)
	}
	if len(cfg.Topics) == 0 {
		return nil, fmt.Errorf("%w: topics: required", ErrConfig)
	}
	c := &Consumer{cfg: cfg, ready: make(chan struct{}, 1), closing: make(chan struct{}),
		groupEnd: make(chan struct{}), errs: map[string]error{}}
	switch strings.ToLower(cfg.StartOffset) {
	case "", "earliest":
		c.start = offsetEarliest
	case "latest":
		c.start = offsetLatest
	default:
		return nil, fmt.Errorf("%w: start_offset: %q is not earliest or latest", ErrConfig, cfg.StartOffset)
	}
	iso, err := isolationLevel(cfg.IsolationLevel)
	if err != nil {
		return nil, err
	}
	c.isolation = iso
	for name, v := range map[string]time.Duration{"session_timeout": cfg.SessionTimeout, "heartbeat_interval": cfg.HeartbeatInterval,
		"rebalance_timeout": cfg.RebalanceTimeout, "join_group_backoff": cfg.JoinGroupBackoff, "max_wait": cfg.MaxWait, "request_timeout": cfg.RequestTimeout} {
		if v < 0 {
			return nil, fmt.Errorf("%w: %s: must not be negative", ErrConfig, name)
		}
	}
	if cfg.FetchMaxBytes < 0 || cfg.PartitionMaxBytes < 0 {
		return nil, fmt.Errorf("%w: fetch_max_bytes, partition_max_bytes: must not be negative", ErrConfig)
	}
	c.maxWait = orDur(cfg.MaxWait, 500*time.Millisecond)
	c.reqTimeout = orDur(cfg.RequestTimeout, 30*time.Second)
	c.maxBytes = orInt(cfg.FetchMaxBytes, DefaultFetchMaxBytes)
	c.partMaxBytes = orInt(cfg.PartitionMaxBytes, DefaultPartitionMaxBytes)
	c.rebalanceWait = orDur(cfg.RebalanceTimeout, 10*time.Second)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c.log = log.With("cluster", cfg.Cluster.Name, "group", cfg.GroupID)
	cd, err := cfg.Cluster.connDialer(cfg.dial)
	if err != nil {
		return nil, err
	}
	kd, err := cfg.Cluster.dialer()
	if err != nil {
		return nil, err
	}
	kd.DialFunc = cfg.dial
	start := kafka.FirstOffset
	if c.start == offsetLatest {
		start = kafka.LastOffset
	}
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                     cfg.GroupID,
		Brokers:                cfg.Cluster.Brokers,
		Dialer:                 kd,
		Topics:                 cfg.Topics,
		GroupBalancers:         []kafka.GroupBalancer{kafka.RangeGroupBalancer{}, kafka.RoundRobinGroupBalancer{}},
		HeartbeatInterval:      orDur(cfg.HeartbeatInterval, time.Second),
		SessionTimeout:         orDur(cfg.SessionTimeout, 10*time.Second),
		RebalanceTimeout:       c.rebalanceWait,
		JoinGroupBackoff:       orDur(cfg.JoinGroupBackoff, time.Second),
		WatchPartitionChanges:  true,
		PartitionWatchInterval: 5 * time.Second,
		StartOffset:            start,
		Logger: kafka.LoggerFunc(func(msg string, args ...any) {
			if c.log.Enabled(context.Background(), slog.LevelDebug) {
				c.log.Debug(fmt.Sprintf(msg, args...), "source", "kafka-go")
			}
		}),
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			c.log.Warn(fmt.Sprintf(msg, args...), "source", "kafka-go")
		}),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c.cg = cg
	c.w = newWire(cd, cfg.Cluster.Brokers, c.log)
	c.base, c.stop = context.WithCancel(context.Background())
	go c.groupLoop()
	return c, nil
}

// groupLoop takes each generation of the group as kafka-go hands it over.
func (c *Consumer) groupLoop() {
	defer close(c.groupEnd)
	for {
		kg, err := c.cg.Next(c.base)
		if err != nil {
			if errors.Is(err, kafka.ErrGroupClosed) || c.base.Err() != nil {
				return
			}
			c.setErr("group", err)
			c.log.Warn("kafka: consumer group: join failed; retrying", "error", err)
			continue
		}
		c.setErr("group", nil)
		c.begin(kg)
	}
}

// begin starts fetching the partitions of a new generation.
func (c *Consumer) begin(kg *kafka.Generation) {
	g := &cgen{kg: kg, held: map[TopicPartition]bool{}, delivering: true, done: make(chan struct{}), hookDone: make(chan struct{})}
	topics := make([]string, 0, len(kg.Assignments))
	for t := range kg.Assignments {
		topics = append(topics, t)
	}
	sort.Strings(topics)
	for _, t := range topics {
		for _, pa := range kg.Assignments[t] {
			p := &partFetch{topic: t, partition: int32(pa.ID), offset: pa.Offset, leader: -1}
			if p.offset < 0 {
				p.offset = c.start
			}
			p.pos.Store(-1)
			p.hwm.Store(-1)
			g.parts = append(g.parts, p)
			tp := TopicPartition{t, pa.ID}
			g.assigned = append(g.assigned, tp)
			g.held[tp] = true
		}
	}
	ctx, cancel := context.WithCancel(c.base)
	g.cancel = cancel
	c.mu.Lock()
	c.genSeq++
	g.seq = c.genSeq
	c.gen = g
	c.mu.Unlock()
	c.joined.Store(true)
	c.log.Info("kafka: consumer joined the group", "generation", kg.ID, "partitions", len(g.assigned))
	m := &fetchManager{c: c, g: g, events: make(chan func(), 16), wake: make(chan struct{}, 1), brokers: map[int32]*brokerFetch{}}
	go m.run(ctx)
	if beforeGenerationStart != nil {
		beforeGenerationStart()
	}
	c.gens.Add(1)
	kg.Start(func(gctx context.Context) {
		defer c.gens.Done()
		<-gctx.Done()
		c.revoke(g)
	})
}

// beforeGenerationStart, when set (by tests only), runs in begin just
// before the generation's revoke function is started.
var beforeGenerationStart func()

// revoke ends generation g (in kafka-go's generation goroutine, which
// rejoins once it returns): it stops fetching, drops what Poll has not
// returned yet, and has Poll run OnRevoke (commits still use g meanwhile).
func (c *Consumer) revoke(g *cgen) {
	g.cancel()
	<-g.done
	start := time.Now()
	g.hookCtx, g.hookCancel = context.WithDeadline(context.Background(), start.Add(max(c.rebalanceWait-time.Second, c.rebalanceWait/2)))
	defer g.hookCancel()
	c.mu.Lock()
	g.delivering = false
	for _, r := range c.queue {
		r.broker.release()
	}
	if c.cur != nil {
		c.cur.broker.release()
	}
	c.queue, c.cur = nil, nil
	hook := c.cfg.OnRevoke != nil && len(g.assigned) > 0
	if hook {
		c.revoked = g
	}
	c.mu.Unlock()
	c.joined.Store(false)
	if hook {
		poke(c.ready)
		t := time.NewTimer(c.rebalanceWait / 2)
		select {
		case <-g.hookDone:
		case <-c.closing:
			// Close runs here (its caller waits for it), with its ctx.
			c.runHook(g, *c.closeCtx.Load())
		case <-t.C:
			skipped := false
			g.hookOnce.Do(func() { skipped = true; close(g.hookDone) })
			if skipped {
				c.log.Warn("kafka: partitions given up without OnRevoke: Poll was not called in time", "generation", g.kg.ID,
					"waited", c.rebalanceWait/2)
			} else {
				<-g.hookDone // Poll started it just now
			}
		}
		t.Stop()
	}
	c.mu.Lock()
	if c.revoked == g {
		c.revoked = nil
	}
	if c.gen == g {
		c.gen = nil
	}
	c.mu.Unlock()
	c.log.Info("kafka: consumer gave up its partitions", "generation", g.kg.ID, "partitions", len(g.assigned),
		"after", time.Since(start).Round(time.Millisecond))
}

// runHook runs OnRevoke for g once.
func (c *Consumer) runHook(g *cgen, ctx context.Context) {
	g.hookOnce.Do(func() {
		defer close(g.hookDone)
		c.cfg.OnRevoke(ctx, slices.Clone(g.assigned))
	})
}

// Poll appends up to max records (max <= 0: no limit but what is
// buffered) to dst and returns it. It waits until at least one record is
// available or ctx ends (then it returns ctx's error). Records of one
// partition come in offset order. A record not returned is not lost: a
// later Poll returns it, or, after a rebalance, the partition's next owner
// reads it from the committed offset.
//
// The records' keys, values and header values alias a copy of their
// record batch taken from the fetch response (or its decompressed
// records), which is never reused: they stay valid as long as the caller
// keeps them (and keep that batch's memory alive, not the response's:
// the response's frame is recycled once parsed). Header slices have a
// capacity equal to their length.
//
// Errors: ErrClosed after Close; an error wrapping errCorrupt or a broker
// error the consumer cannot get past (an authorization failure, a
// message format it cannot read) once, until it recurs. Transient
// problems (a broker down, a leader moving, a rebalance) are retried
// without returning; Err reports them meanwhile.
func (c *Consumer) Poll(ctx context.Context, dst []stream.Message, max int) ([]stream.Message, error) {
	n0 := len(dst)
	if max <= 0 {
		max = int(^uint(0) >> 1)
	}
	for {
		if c.closed.Load() {
			return dst, ErrClosed
		}
		c.mu.Lock()
		if g := c.revoked; g != nil && len(dst) == n0 {
			c.revoked = nil
			c.mu.Unlock()
			c.runHook(g, g.hookCtx)
			continue
		}
		dst = c.fillLocked(dst, n0, max)
		err := c.fatal
		if err == nil && len(dst) == n0 {
			err, c.pollErr = c.pollErr, nil
		}
		c.mu.Unlock()
		if len(dst) > n0 || err != nil {
			return dst, err
		}
		select {
		case <-c.ready:
		case <-ctx.Done():
			return dst, ctx.Err()
		case <-c.closing:
			return dst, ErrClosed
		}
	}
}

// fillLocked decodes buffered records into dst until max records were
// added or nothing is buffered.
func (c *Consumer) fillLocked(dst []stream.Message, n0, max int) []stream.Message {
	for len(dst)-n0 < max {
		if c.cur == nil {
			if len(c.queue) == 0 {
				return dst
			}
			c.cur = c.queue[0]
			c.queue[0] = nil
			c.queue = c.queue[1:]
		}
		r := c.cur
		if c.gen == nil || r.gen != c.gen.seq || !c.gen.delivering {
			r.broker.release()
			c.cur = nil
			continue
		}
		var err error
		dst, err = r.decode(dst, max-(len(dst)-n0))
		if err != nil {
			// A batch whose CRC matched but whose records do not decode: the
			// broker accepted what a broken producer wrote. Never skip it:
			// stop here (fail closed).
			c.fatal = fmt.Errorf("kafka: poll: %w", err)
			c.log.Error("kafka: consumer stopped at a record it cannot decode", "error", err)
			r.broker.release()
			c.cur = nil
			return dst
		}
		if r.done() {
			r.broker.release()
			c.cur = nil
		}
	}
	return dst
}

// deliver queues r for Poll, unless its generation is over.
func (c *Consumer) deliver(g *cgen, r *fetchResult) {
	c.mu.Lock()
	ok := c.gen == g && g.delivering
	if ok {
		c.queue = append(c.queue, r)
	}
	c.mu.Unlock()
	if !ok {
		r.broker.release()
		return
	}
	poke(c.ready)
}

// reportErr makes Poll return err once.
func (c *Consumer) reportErr(err error) {
	c.mu.Lock()
	if c.pollErr == nil {
		c.pollErr = err
	}
	c.mu.Unlock()
	poke(c.ready)
}

// Commit synchronously commits offsets (the next offset to read, per
// partition; the highest wins when a partition is given twice) for the
// group. Offsets of partitions this member does not hold are not
// committed: Commit then returns an error wrapping ErrNotAssigned, after
// committing the others. Within OnRevoke the revoked partitions are still
// held. If ctx ends first Commit returns its error; the commit request may
// still complete.
func (c *Consumer) Commit(ctx context.Context, offsets ...Offset) error {
	if len(offsets) == 0 {
		return nil
	}
	c.mu.Lock()
	g := c.gen
	c.mu.Unlock()
	if g == nil {
		return fmt.Errorf("kafka: commit: not in the group: %w", ErrNotAssigned)
	}
	req := map[string]map[int]int64{}
	var missing []string
	for _, o := range offsets {
		if o.Next < 0 {
			return fmt.Errorf("kafka: commit: %s[%d]: offset %d", o.Topic, o.Partition, o.Next)
		}
		if !g.held[TopicPartition{o.Topic, o.Partition}] {
			missing = append(missing, TopicPartition{o.Topic, o.Partition}.String())
			continue
		}
		if req[o.Topic] == nil {
			req[o.Topic] = map[int]int64{}
		}
		if cur, ok := req[o.Topic][o.Partition]; !ok || o.Next > cur {
			req[o.Topic][o.Partition] = o.Next
		}
	}
	if len(req) > 0 {
		errc := make(chan error, 1)
		go func() { errc <- g.kg.CommitOffsets(req) }()
		select {
		case err := <-errc:
			if err != nil {
				return fmt.Errorf("kafka: commit: %w", err)
			}
		case <-ctx.Done():
			return fmt.Errorf("kafka: commit: %w", ctx.Err())
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("kafka: commit: %s: %w", strings.Join(missing, ", "), ErrNotAssigned)
	}
	return nil
}

// Joined reports whether the consumer is in a generation of the group (it
// may hold no partition if the group has more members than partitions).
func (c *Consumer) Joined() bool { return c.joined.Load() }

// Assigned returns the partitions Poll may currently return records of.
func (c *Consumer) Assigned() []TopicPartition {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen == nil || !c.gen.delivering {
		return nil
	}
	return slices.Clone(c.gen.assigned)
}

// Positions returns the fetch position and high-water mark of every
// assigned partition (for a lag gauge: HighWaterMark − the offset the
// caller processed).
func (c *Consumer) Positions() []Position {
	c.mu.Lock()
	g := c.gen
	c.mu.Unlock()
	if g == nil {
		return nil
	}
	out := make([]Position, 0, len(g.parts))
	for _, p := range g.parts {
		out = append(out, Position{Topic: p.topic, Partition: int(p.partition), Fetched: p.pos.Load(), HighWaterMark: p.hwm.Load()})
	}
	return out
}

// Err reports what currently keeps the consumer from fetching (the group
// coordinator unreachable, a broker down, a partition without a leader),
// or nil when nothing does. It is retried meanwhile.
func (c *Consumer) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fatal != nil {
		return c.fatal
	}
	keys := make([]string, 0, len(c.errs))
	for k := range c.errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		errs = append(errs, fmt.Errorf("%s: %w", k, c.errs[k]))
	}
	return errors.Join(errs...)
}

func (c *Consumer) setErr(source string, err error) {
	c.mu.Lock()
	if err == nil {
		delete(c.errs, source)
	} else {
		c.errs[source] = err
	}
	c.mu.Unlock()
}

// Close stops fetching, calls OnRevoke for the partitions held (in its
// goroutine, with ctx), leaves the group and closes the connections, waiting for that
// until ctx ends (then it returns ctx's error and leaves the rest to
// finish in the background). It commits nothing itself.
func (c *Consumer) Close(ctx context.Context) error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.closeCtx.Store(&ctx)
	close(c.closing)
	done := make(chan struct{})
	go func() {
		_ = c.cg.Close() // ends the generation (OnRevoke runs) and leaves the group
		<-c.groupEnd     // no generation begins after this
		// A generation handed over just before Close revokes (and runs
		// OnRevoke) in a goroutine kafka-go's Close does not wait for.
		c.gens.Wait()
		c.stop()
		c.w.close()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("kafka: consumer close: %w", ctx.Err())
	}
}

// partFetch is the fetch state of one assigned partition; only its
// generation's fetch manager changes it (pos and hwm are read by
// Positions).
type partFetch struct {
	topic     string
	partition int32
	offset    int64 // next offset to fetch; offsetEarliest/offsetLatest: to look up
	leader    int32 // -1: unknown
	busy      bool  // in a fetch or offset lookup in flight
	retryAt   time.Time
	fails     int
	pos       atomic.Int64
	hwm       atomic.Int64
}

func (p *partFetch) tp() TopicPartition { return TopicPartition{p.topic, int(p.partition)} }

// brokerFetch is the fetch state of one broker: at most one fetch in
// flight, and at most two fetches not yet handed out by Poll (the one in
// flight and one buffered, or two buffered).
type brokerFetch struct {
	id          int32
	inflight    bool
	outstanding atomic.Int32
	fails       int
	retryAt     time.Time
	wake        chan struct{}
}

// release returns the credit of a fetch result Poll is done with.
func (b *brokerFetch) release() {
	b.outstanding.Add(-1)
	poke(b.wake)
}

// maxOutstanding is how many fetches per broker may be in flight or
// buffered ahead of Poll.
const maxOutstanding = 2

// fetchManager runs the fetches of one generation.
type fetchManager struct {
	c       *Consumer
	g       *cgen
	events  chan func()
	wake    chan struct{}
	brokers map[int32]*brokerFetch

	needMeta    bool
	metaBusy    bool
	metaRetryAt time.Time
	metaFails   int
	rotate      int
}

func (m *fetchManager) run(ctx context.Context) {
	defer close(m.g.done)
	m.needMeta = true
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := m.step(ctx, time.Now())
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), time.Millisecond))
		}
		select {
		case f := <-m.events:
			f()
		case <-m.wake:
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// post hands f to the manager goroutine, unless the generation is over.
func (m *fetchManager) post(ctx context.Context, f func()) {
	select {
	case m.events <- f:
	case <-ctx.Done():
	}
}

func (m *fetchManager) backoff(fails int) time.Duration {
	return clientRetry.Delay(fails)
}

// step starts what can start now: a metadata refresh, offset lookups,
// fetches. It returns when it should run again for retries (zero: not
// before an event).
func (m *fetchManager) step(ctx context.Context, now time.Time) time.Time {
	var next time.Time
	later := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	if m.needMeta && !m.metaBusy {
		if now.Before(m.metaRetryAt) {
			later(m.metaRetryAt)
		} else {
			m.refreshMetadata(ctx)
		}
	}
	resolve := map[int32][]*partFetch{}
	fetch := map[int32][]*partFetch{}
	for _, p := range m.g.parts {
		if p.busy || p.leader < 0 {
			continue
		}
		if now.Before(p.retryAt) {
			later(p.retryAt)
			continue
		}
		if p.offset < 0 {
			resolve[p.leader] = append(resolve[p.leader], p)
		} else {
			fetch[p.leader] = append(fetch[p.leader], p)
		}
	}
	for id, ps := range resolve {
		m.listOffsets(ctx, id, ps)
	}
	for id, ps := range fetch {
		b := m.broker(id)
		if b.inflight || b.outstanding.Load() >= maxOutstanding {
			continue
		}
		if now.Before(b.retryAt) {
			later(b.retryAt)
			continue
		}
		m.fetch(ctx, b, ps)
	}
	return next
}

func (m *fetchManager) broker(id int32) *brokerFetch {
	b := m.brokers[id]
	if b == nil {
		b = &brokerFetch{id: id, wake: m.wake}
		m.brokers[id] = b
	}
	return b
}

// refreshMetadata looks up the leaders of the generation's partitions.
func (m *fetchManager) refreshMetadata(ctx context.Context) {
	m.metaBusy = true
	m.needMeta = false
	topics := map[string]bool{}
	for _, p := range m.g.parts {
		topics[p.topic] = true
	}
	names := make([]string, 0, len(topics))
	for t := range topics {
		names = append(names, t)
	}
	go func() {
		resp, err := m.c.w.metadata(ctx, names, m.c.reqTimeout)
		m.post(ctx, func() { m.metadataDone(resp, err) })
	}()
}

func (m *fetchManager) metadataDone(resp *metadataAPI.Response, err error) {
	m.metaBusy = false
	if err != nil {
		m.metaFails++
		m.needMeta = true
		m.metaRetryAt = time.Now().Add(m.backoff(m.metaFails))
		m.c.setErr("metadata", err)
		return
	}
	type key struct {
		topic string
		part  int32
	}
	leaders := map[key]int32{}
	topicErr := map[string]error{}
	for _, t := range resp.Topics {
		if t.ErrorCode != 0 {
			topicErr[t.Name] = kafkaErr(t.ErrorCode)
		}
		for _, p := range t.Partitions {
			leaders[key{t.Name, p.PartitionIndex}] = p.LeaderID
		}
	}
	var missing []string
	for _, p := range m.g.parts {
		l, ok := leaders[key{p.topic, p.partition}]
		if !ok {
			l = -1
		}
		p.leader = l
		if l < 0 {
			why := "no leader"
			if err := topicErr[p.topic]; err != nil {
				why = err.Error()
			}
			missing = append(missing, fmt.Sprintf("%s (%s)", p.tp(), why))
		}
	}
	if len(missing) > 0 {
		m.metaFails++
		m.needMeta = true
		m.metaRetryAt = time.Now().Add(m.backoff(m.metaFails))
		m.c.setErr("metadata", fmt.Errorf("partitions not fetchable: %s", strings.Join(missing, ", ")))
		return
	}
	m.metaFails = 0
	m.c.setErr("metadata", nil)
}

// listOffsets looks up the start offsets of ps (led by broker id) per the
// StartOffset policy.
func (m *fetchManager) listOffsets(ctx context.Context, id int32, ps []*partFetch) {
	req := &listOffsetsAPI.Request{ReplicaID: -1, IsolationLevel: m.c.isolation}
	topicAt := map[string]int{}
	for _, p := range ps {
		p.busy = true
		ti, ok := topicAt[p.topic]
		if !ok {
			ti = len(req.Topics)
			topicAt[p.topic] = ti
			req.Topics = append(req.Topics, listOffsetsAPI.RequestTopic{Topic: p.topic})
		}
		req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, listOffsetsAPI.RequestPartition{
			Partition: p.partition, CurrentLeaderEpoch: -1, Timestamp: p.offset})
	}
	go func() {
		var resp *listOffsetsAPI.Response
		conn, err := m.c.w.conn(ctx, id, kindControl)
		if err == nil {
			var r protocol.Message
			r, err = conn.roundTrip(ctx, req, 1, 5, m.c.reqTimeout)
			if err == nil {
				resp = r.(*listOffsetsAPI.Response)
			}
		}
		m.post(ctx, func() { m.listOffsetsDone(id, ps, resp, err) })
	}()
}

func (m *fetchManager) listOffsetsDone(id int32, ps []*partFetch, resp *listOffsetsAPI.Response, err error) {
	now := time.Now()
	for _, p := range ps {
		p.busy = false
	}
	source := fmt.Sprintf("broker %d", id)
	if err != nil {
		for _, p := range ps {
			p.fails++
			p.retryAt = now.Add(m.backoff(p.fails))
		}
		m.needMeta = true
		m.c.setErr(source, err)
		return
	}
	for _, t := range resp.Topics {
		for _, r := range t.Partitions {
			for _, p := range ps {
				if p.topic != t.Topic || p.partition != r.Partition {
					continue
				}
				if r.ErrorCode != 0 {
					m.partitionError(p, r.ErrorCode, now)
					continue
				}
				p.offset = r.Offset
				p.pos.Store(r.Offset)
				m.partitionOK(p)
			}
		}
	}
}

// fetch sends one fetch request to broker b for ps.
func (m *fetchManager) fetch(ctx context.Context, b *brokerFetch, ps []*partFetch) {
	// Start the list at a different partition each time, so that a
	// response filled to FetchMaxBytes does not always favour the same
	// partitions.
	m.rotate++
	parts := make([]fetchPart, 0, len(ps))
	for i := range ps {
		p := ps[(i+m.rotate)%len(ps)]
		p.busy = true
		parts = append(parts, fetchPart{p: p, from: p.offset})
	}
	b.inflight = true
	b.outstanding.Add(1)
	c := m.c
	readCommitted := c.isolation == 1
	go func() {
		out, err := func() ([]partOutcome, error) {
			conn, err := c.w.conn(ctx, b.id, kindData)
			if err != nil {
				return nil, err
			}
			frame, err := fetchRequest(conn.clientID, parts, c.maxWait, c.maxBytes, c.partMaxBytes, c.isolation)
			if err != nil {
				return nil, err
			}
			if _, err := conn.version(protocol.Fetch, fetchVersion, fetchVersion); err != nil {
				return nil, err
			}
			cl := fetchCall(frame, c.maxWait, c.reqTimeout)
			conn.send(cl)
			select {
			case <-cl.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if cl.err != nil {
				return nil, cl.err
			}
			out, err := parseFetch(cl.body(), parts, readCommitted)
			// parseFetch copied out every record it delivers: nothing
			// refers to the frame any more.
			frameBufs.put(cl.resp)
			cl.resp = nil
			return out, err
		}()
		m.post(ctx, func() { m.fetched(b, parts, out, err) })
	}()
}

// fetched applies a fetch's outcome and hands its records to Poll.
func (m *fetchManager) fetched(b *brokerFetch, parts []fetchPart, out []partOutcome, err error) {
	now := time.Now()
	b.inflight = false
	for _, fp := range parts {
		fp.p.busy = false
	}
	source := fmt.Sprintf("broker %d", b.id)
	if err != nil {
		b.outstanding.Add(-1)
		b.fails++
		b.retryAt = now.Add(m.backoff(b.fails))
		m.needMeta = true
		m.c.setErr(source, err)
		if b.fails == 1 || b.fails%20 == 0 {
			m.c.log.Warn("kafka: fetch failed; retrying", "broker", b.id, "attempt", b.fails, "error", err)
		}
		return
	}
	if b.fails > 0 {
		m.c.log.Info("kafka: fetching again", "broker", b.id)
	}
	b.fails = 0
	m.c.setErr(source, nil)
	r := &fetchResult{gen: m.g.seq, broker: b}
	for i := range out {
		o := &out[i]
		p := o.fp.p
		if !o.answered {
			continue
		}
		if o.code != 0 {
			m.partitionError(p, o.code, now)
			continue
		}
		p.hwm.Store(o.hwm)
		if o.next > p.offset {
			p.offset = o.next
			p.pos.Store(o.next)
		}
		m.partitionOK(p)
		if o.err != nil {
			// Records up to the bad batch are delivered; the batch is
			// fetched again (it may have been damaged on the way), and Poll
			// reports the error.
			p.fails++
			p.retryAt = now.Add(m.backoff(p.fails))
			m.c.reportErr(fmt.Errorf("kafka: fetch %s at offset %d: %w", p.tp(), p.offset, o.err))
			m.c.log.Warn("kafka: fetched records do not decode; fetching again", "partition", p.tp().String(), "offset", p.offset, "error", o.err)
		}
		if len(o.views) > 0 {
			r.parts = append(r.parts, resultPart{topic: p.topic, partition: p.partition, hwm: o.hwm, views: o.views})
			r.left += o.nrecords
		}
	}
	if len(r.parts) == 0 {
		b.outstanding.Add(-1)
		return
	}
	m.c.deliver(m.g, r)
}

// partitionOK clears the error state of p.
func (m *fetchManager) partitionOK(p *partFetch) {
	if p.fails > 0 {
		p.fails = 0
		m.c.setErr(p.tp().String(), nil)
	}
}

// partitionError handles a broker's error code for partition p.
func (m *fetchManager) partitionError(p *partFetch, code int16, now time.Time) {
	err := kafkaErr(code)
	p.fails++
	switch kafka.Error(code) {
	case kafka.OffsetOutOfRange:
		policy := "earliest"
		if m.c.start == offsetLatest {
			policy = "latest"
		}
		m.c.log.Warn("kafka: offset out of range; restarting the partition per start_offset", "partition", p.tp().String(),
			"offset", p.offset, "start_offset", policy)
		p.offset = m.c.start
		p.retryAt = now
		return
	case kafka.NotLeaderForPartition, kafka.LeaderNotAvailable, kafka.UnknownTopicOrPartition,
		kafka.FencedLeaderEpoch, kafka.UnknownLeaderEpoch, kafka.KafkaStorageError, kafka.ReplicaNotAvailable,
		kafka.OffsetNotAvailable, kafka.NotCoordinatorForGroup:
		m.needMeta = true
		p.retryAt = now.Add(m.backoff(min(p.fails, 3)))
	case kafka.TopicAuthorizationFailed, kafka.ClusterAuthorizationFailed, kafka.UnsupportedVersion:
		p.retryAt = now.Add(5 * time.Second)
		m.c.reportErr(fmt.Errorf("kafka: fetch %s: %w", p.tp(), err))
	default:
		p.retryAt = now.Add(m.backoff(p.fails))
	}
	m.c.setErr(p.tp().String(), err)
	// A moved leader is routine: say so only when it persists.
	switch {
	case p.fails == 3 || p.fails%20 == 0:
		m.c.log.Warn("kafka: fetch error; retrying", "partition", p.tp().String(), "attempt", p.fails, "error", err)
	case p.fails < 3:
		m.c.log.Debug("kafka: fetch error; retrying", "partition", p.tp().String(), "attempt", p.fails, "error", err)
	}
}

// kafkaErr is the error of a broker error code.
func kafkaErr(code int16) error { return kafka.Error(code) }

// ConsumerSubscriber adapts a Consumer to stream.Subscriber (and
// stream.GroupMember) for code that reads one record at a time: Fetch is
// Poll of one record, Commit commits the offset after the highest of the
// given records per partition. It buffers nothing, so it never returns a
// record of a partition given up in a rebalance.
type ConsumerSubscriber struct {
	c   *Consumer
	buf []stream.Message
}

// Subscriber returns c as a stream.Subscriber.
func (c *Consumer) Subscriber() *ConsumerSubscriber {
	return &ConsumerSubscriber{c: c, buf: make([]stream.Message, 0, 1)}
}

// Fetch returns the next record without committing it.
func (s *ConsumerSubscriber) Fetch(ctx context.Context) (stream.Message, error) {
	var err error
	s.buf, err = s.c.Poll(ctx, s.buf[:0], 1)
	if len(s.buf) == 0 {
		if err == nil {
			err = errors.New("kafka: poll returned nothing")
		}
		return stream.Message{}, err
	}
	return s.buf[0], nil
}

// Commit synchronously commits, per partition, the offset after the
// highest of msgs.
func (s *ConsumerSubscriber) Commit(ctx context.Context, msgs ...stream.Message) error {
	return s.c.Commit(ctx, OffsetsAfter(msgs...)...)
}

// Joined reports whether the consumer is in the group.
func (s *ConsumerSubscriber) Joined() bool { return s.c.Joined() }

var (
	_ stream.Subscriber  = (*ConsumerSubscriber)(nil)
	_ stream.GroupMember = (*ConsumerSubscriber)(nil)
)
