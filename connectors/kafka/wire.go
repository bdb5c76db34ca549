package kafka

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	apiVersionsAPI "github.com/segmentio/kafka-go/protocol/apiversions"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"
	saslAuthAPI "github.com/segmentio/kafka-go/protocol/saslauthenticate"
	saslHandshakeAPI "github.com/segmentio/kafka-go/protocol/saslhandshake"
	"github.com/segmentio/kafka-go/sasl"

	"github.com/residency-router/residency/stream"
)

// This file is the connection layer of the Consumer and the Producer: our
// own connections to the brokers, speaking the Kafka protocol with
// kafka-go's protocol package for the control requests (ApiVersions, SASL,
// Metadata, ListOffsets, InitProducerId) and hand-written encoding for the
// hot ones (fetch responses, produce requests), so that a fetch response is
// read into one buffer the records can alias, and a produce request is
// written from the record batches the Producer already encoded.
//
// A brokerConn pipelines: requests are written in the order they are sent
// and the responses read back in that order (Kafka answers the requests of
// one connection in order), so several produce requests can be in flight on
// one connection without losing their order.

// dialFunc opens a TCP connection; tests route connections through a proxy.
type dialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// errConnClosed: the connection was closed (by us) with calls pending.
var errConnClosed = errors.New("kafka: connection closed")

// maxResponseBytes bounds the size of one response frame we accept: a
// corrupt length must not make us allocate gigabytes.
const maxResponseBytes = 1 << 30

// connDialer opens connections to brokers: TCP (or the test hook), TLS,
// ApiVersions, SASL.
type connDialer struct {
	clientID string
	timeout  time.Duration
	tls      *tls.Config
	mech     sasl.Mechanism
	dial     dialFunc
}

// connDialer returns the dialer of the cluster's own connections, with the
// same TLS and SASL settings as kafka-go's dialer and transport.
func (c *Cluster) connDialer(dial dialFunc) (*connDialer, error) {
	t, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	m, err := c.mechanism()
	if err != nil {
		return nil, err
	}
	return &connDialer{clientID: c.clientID(), timeout: c.dialTimeout(), tls: t, mech: m, dial: dial}, nil
}

// connect opens a connection to addr and prepares it: TLS handshake,
// ApiVersions, SASL authentication.
func (d *connDialer) connect(ctx context.Context, addr string) (*brokerConn, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	dial := d.dial
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("kafka: dial %s: %w", addr, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	bc, err := d.prepare(ctx, addr, nc)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		_ = nc.Close()
		return nil, fmt.Errorf("kafka: connect %s: %w", addr, err)
	}
	return bc, nil
}

func (d *connDialer) prepare(ctx context.Context, addr string, nc net.Conn) (*brokerConn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	if d.tls != nil {
		cfg := d.tls.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(nc, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		nc = tc
	}
	hs := handshake{nc: nc, clientID: d.clientID}
	r, err := hs.roundTrip(0, &apiVersionsAPI.Request{})
	if err != nil {
		return nil, fmt.Errorf("api versions: %w", err)
	}
	av := r.(*apiVersionsAPI.Response)
	if av.ErrorCode != 0 {
		return nil, fmt.Errorf("api versions: %w", kafka.Error(av.ErrorCode))
	}
	versions := make(map[protocol.ApiKey][2]int16, len(av.ApiKeys))
	for _, k := range av.ApiKeys {
		versions[protocol.ApiKey(k.ApiKey)] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	bc := &brokerConn{addr: addr, nc: nc, clientID: d.clientID, versions: versions}
	if d.mech != nil {
		if err := d.authenticate(ctx, addr, &hs, bc); err != nil {
			return nil, err
		}
	}
	_ = nc.SetDeadline(time.Time{})
	bc.start(hs.id)
	return bc, nil
}

// authenticate runs the SASL exchange (SaslHandshake v1, then
// SaslAuthenticate rounds) with kafka-go's mechanism.
func (d *connDialer) authenticate(ctx context.Context, addr string, hs *handshake, bc *brokerConn) error {
	r, err := hs.roundTrip(1, &saslHandshakeAPI.Request{Mechanism: d.mech.Name()})
	if err != nil {
		return fmt.Errorf("sasl handshake: %w", err)
	}
	if code := r.(*saslHandshakeAPI.Response).ErrorCode; code != 0 {
		return fmt.Errorf("sasl handshake: %w", kafka.Error(code))
	}
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	ctx = sasl.WithMetadata(ctx, &sasl.Metadata{Host: host, Port: p})
	sess, state, err := d.mech.Start(ctx)
	if err != nil {
		return fmt.Errorf("sasl: %w", err)
	}
	v, err := bc.version(protocol.SaslAuthenticate, 0, 1)
	if err != nil {
		return err
	}
	for done := false; !done; {
		r, err := hs.roundTrip(v, &saslAuthAPI.Request{AuthBytes: state})
		if err != nil {
			return fmt.Errorf("sasl authenticate: %w", err)
		}
		resp := r.(*saslAuthAPI.Response)
		if resp.ErrorCode != 0 {
			return fmt.Errorf("sasl authenticate: %w", kafka.Error(resp.ErrorCode))
		}
		if done, state, err = sess.Next(ctx, resp.AuthBytes); err != nil {
			return fmt.Errorf("sasl: %w", err)
		}
	}
	return nil
}

// handshake runs the synchronous requests of a connection being prepared.
type handshake struct {
	nc       net.Conn
	clientID string
	id       int32
}

func (h *handshake) roundTrip(version int16, msg protocol.Message) (protocol.Message, error) {
	h.id++
	var buf bytes.Buffer
	if err := protocol.WriteRequest(&buf, version, h.id, h.clientID, msg); err != nil {
		return nil, err
	}
	if _, err := h.nc.Write(buf.Bytes()); err != nil {
		return nil, err
	}
	frame, err := readFrame(h.nc, make([]byte, 4), false)
	if err != nil {
		return nil, err
	}
	id, resp, err := protocol.ReadResponse(bytes.NewReader(frame), msg.ApiKey(), version)
	if err != nil {
		return nil, err
	}
	if id != h.id {
		return nil, fmt.Errorf("correlation id %d, want %d", id, h.id)
	}
	return resp, nil
}

// readFrame reads one response frame: its 4-byte size and the bytes it
// announces, into a buffer that holds both: a new one, or, when pooled, one
// of frameBufs (whose reader gives it back with frameBufs.put).
func readFrame(r io.Reader, size []byte, pooled bool) ([]byte, error) {
	if _, err := io.ReadFull(r, size[:4]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(size))
	if n < 4 || n > maxResponseBytes {
		return nil, fmt.Errorf("kafka: response of %d bytes", n)
	}
	var buf []byte
	if pooled {
		buf = frameBufs.get(4 + int(n))
	} else {
		buf = make([]byte, 4+int(n))
	}
	copy(buf, size[:4])
	if _, err := io.ReadFull(r, buf[4:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// frameBufs recycles the frames of fetch responses. A fetch response is
// read whole into a frame, then parseFetch copies the records it delivers
// out of it (fetch.go, recArena), so the frame is given back as soon as
// it is parsed, and a frame of 1-2 MiB is no longer allocated per fetch
// and kept alive by the last unsettled record it held (docs/performance.md,
// "Memory: a million pins…").
var frameBufs = framePool{max: framePoolSize}

const (
	// framePoolSize is how many frames frameBufs keeps: one read at a time
	// per broker connection, a few brokers.
	framePoolSize = 4
	// framePoolMaxBuf is the largest frame frameBufs keeps (a response
	// larger than this is left to the garbage collector).
	framePoolMaxBuf = 16 << 20
	// frameRound is what a new pooled frame's capacity is rounded up to,
	// so that a slightly larger response next time fits it.
	frameRound = 64 << 10
)

// framePool is a small free list of byte buffers, safe for concurrent use.
// Unlike a sync.Pool it is not emptied by garbage collections, which a
// tight memory limit makes frequent.
type framePool struct {
	mu   sync.Mutex
	max  int
	free [][]byte
}

// get returns a buffer of length n: the smallest free one with room for
// it, else a new one.
func (p *framePool) get(n int) []byte {
	p.mu.Lock()
	best := -1
	for i, b := range p.free {
		if cap(b) >= n && (best < 0 || cap(b) < cap(p.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best]
		last := len(p.free) - 1
		p.free[best] = p.free[last]
		p.free[last] = nil
		p.free = p.free[:last]
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]byte, n, (n+frameRound-1)/frameRound*frameRound)
}

// put gives back b, which nothing reads or writes any more. When the pool
// is full it keeps the larger buffers.
func (p *framePool) put(b []byte) {
	if cap(b) == 0 || cap(b) > framePoolMaxBuf {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < p.max {
		p.free = append(p.free, b)
		return
	}
	small := 0
	for i := range p.free {
		if cap(p.free[i]) < cap(p.free[small]) {
			small = i
		}
	}
	if cap(p.free[small]) < cap(b) {
		p.free[small] = b
	}
}

// call is one request on a brokerConn and, once finished, its response.
type call struct {
	// frame is the request: frame[0] starts with the size, API key,
	// version and a correlation id placeholder at [8:12].
	frame   net.Buffers
	timeout time.Duration // for the response, from when the request is written
	// pooled: the response frame is taken from frameBufs, and the caller
	// gives it back once nothing refers to it (fetches, after parseFetch).
	pooled bool

	// Set by the connection.
	corrID   int32
	deadline time.Time
	writing  bool // the writer is still writing the frame
	answered bool // the response came while writing
	failed   bool // the connection failed while writing

	// resp is the whole response frame (size, correlation id, body); err
	// is set instead when the call failed.
	resp []byte
	err  error

	// done is closed when the call is finished, unless onDone is set, which
	// is then called instead (from the connection's goroutines: it must not
	// block).
	done   chan struct{}
	onDone func(*call)
}

func (c *call) finish() {
	if c.onDone != nil {
		c.onDone(c)
		return
	}
	close(c.done)
}

// body returns the response after the correlation id (for a response
// header v0, which every request we encode by hand has).
func (c *call) body() []byte { return c.resp[8:] }

// brokerConn is one prepared connection to a broker. Requests are written
// by one goroutine in the order of send, responses read by another in the
// same order. A failed read or write, or a response not received within
// its call's timeout, closes the connection and fails every pending call.
type brokerConn struct {
	addr     string
	nc       net.Conn
	clientID string
	versions map[protocol.ApiKey][2]int16
	lastUsed atomic.Int64 // unix nanoseconds

	mu     sync.Mutex
	closed bool
	err    error
	writeQ []*call
	readQ  []*call
	nextID int32
	wwake  chan struct{}
	rwake  chan struct{}
	done   chan struct{}
	size   [4]byte // read buffer of the frame sizes
}

func (c *brokerConn) start(lastID int32) {
	c.nextID = lastID
	c.wwake = make(chan struct{}, 1)
	c.rwake = make(chan struct{}, 1)
	c.done = make(chan struct{})
	c.lastUsed.Store(time.Now().UnixNano())
	go c.writeLoop()
	go c.readLoop()
}

// version picks the highest version of key that we (in [lo, hi]), kafka-go
// (for requests it encodes) and the broker all support.
func (c *brokerConn) version(key protocol.ApiKey, lo, hi int16) (int16, error) {
	bv, ok := c.versions[key]
	if !ok {
		return 0, fmt.Errorf("kafka: broker %s does not support %s", c.addr, key)
	}
	v := min(hi, bv[1])
	if v < max(lo, bv[0]) {
		return 0, fmt.Errorf("kafka: broker %s supports %s v%d-v%d, we need v%d-v%d", c.addr, key, bv[0], bv[1], lo, hi)
	}
	return v, nil
}

// usable reports whether the connection is open and was used within idle
// (brokers close connections idle for connections.max.idle.ms, 10 min by
// default; a request on such a connection would fail).
func (c *brokerConn) usable(idle time.Duration) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	return idle <= 0 || time.Since(time.Unix(0, c.lastUsed.Load())) < idle
}

// send queues cl; it is finished (answered or failed) later.
func (c *brokerConn) send(cl *call) {
	c.lastUsed.Store(time.Now().UnixNano())
	c.mu.Lock()
	if c.closed {
		cl.err = c.err
		c.mu.Unlock()
		cl.finish()
		return
	}
	c.writeQ = append(c.writeQ, cl)
	c.mu.Unlock()
	poke(c.wwake)
}

// roundTrip sends msg, encoded by kafka-go at the highest version in
// [lo, hi] both sides support, and decodes the response. When ctx ends
// first the request may still be answered (and the answer dropped).
func (c *brokerConn) roundTrip(ctx context.Context, msg protocol.Message, lo, hi int16, timeout time.Duration) (protocol.Message, error) {
	v, err := c.version(msg.ApiKey(), max(lo, msg.ApiKey().MinVersion()), min(hi, msg.ApiKey().MaxVersion()))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := protocol.WriteRequest(&buf, v, 0, c.clientID, msg); err != nil {
		return nil, err
	}
	cl := &call{frame: net.Buffers{buf.Bytes()}, timeout: timeout, done: make(chan struct{})}
	c.send(cl)
	select {
	case <-cl.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if cl.err != nil {
		return nil, cl.err
	}
	_, resp, err := protocol.ReadResponse(bytes.NewReader(cl.resp), msg.ApiKey(), v)
	if err != nil {
		return nil, fmt.Errorf("kafka: %s response: %w", msg.ApiKey(), err)
	}
	return resp, nil
}

func (c *brokerConn) writeLoop() {
	for {
		select {
		case <-c.wwake:
		case <-c.done:
			return
		}
		for {
			c.mu.Lock()
			if c.closed || len(c.writeQ) == 0 {
				c.mu.Unlock()
				break
			}
			cl := c.writeQ[0]
			c.writeQ[0] = nil
			c.writeQ = c.writeQ[1:]
			c.nextID++
			cl.corrID = c.nextID
			binary.BigEndian.PutUint32(cl.frame[0][8:12], uint32(cl.corrID))
			cl.deadline = time.Now().Add(cl.timeout)
			cl.writing = true
			c.readQ = append(c.readQ, cl)
			c.mu.Unlock()
			poke(c.rwake)

			_ = c.nc.SetWriteDeadline(cl.deadline)
			bufs := cl.frame
			_, err := bufs.WriteTo(c.nc)

			c.mu.Lock()
			cl.writing = false
			finish := cl.answered || cl.failed
			c.mu.Unlock()
			if finish {
				cl.finish()
			}
			if err != nil {
				c.fail(fmt.Errorf("kafka: write to %s: %w", c.addr, err))
				return
			}
		}
	}
}

func (c *brokerConn) readLoop() {
	for {
		c.mu.Lock()
		for len(c.readQ) == 0 && !c.closed {
			c.mu.Unlock()
			select {
			case <-c.rwake:
			case <-c.done:
				return
			}
			c.mu.Lock()
		}
		if c.closed {
			c.mu.Unlock()
			return
		}
		cl := c.readQ[0]
		dl := cl.deadline
		c.mu.Unlock()

		_ = c.nc.SetReadDeadline(dl)
		frame, err := readFrame(c.nc, c.size[:], cl.pooled)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				err = fmt.Errorf("no response within %v: %w", cl.timeout, err)
			}
			c.fail(fmt.Errorf("kafka: read from %s: %w", c.addr, err))
			return
		}
		if id := int32(binary.BigEndian.Uint32(frame[4:8])); id != cl.corrID {
			c.fail(fmt.Errorf("kafka: read from %s: correlation id %d, want %d", c.addr, id, cl.corrID))
			return
		}
		c.mu.Lock()
		c.readQ[0] = nil
		c.readQ = c.readQ[1:]
		cl.resp = frame
		finish := !cl.writing
		cl.answered = cl.writing
		c.mu.Unlock()
		if finish {
			cl.finish()
		}
	}
}

// fail closes the connection with err and fails every pending call.
func (c *brokerConn) fail(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.err = err
	var now []*call
	for _, q := range [][]*call{c.readQ, c.writeQ} {
		for _, cl := range q {
			cl.err = err
			if cl.writing {
				cl.failed = true // finished by the writer once its write returns
			} else {
				now = append(now, cl)
			}
		}
	}
	c.readQ, c.writeQ = nil, nil
	c.mu.Unlock()
	close(c.done)
	_ = c.nc.Close()
	for _, cl := range now {
		cl.finish()
	}
}

// close closes the connection, failing pending calls.
func (c *brokerConn) close() { c.fail(errConnClosed) }

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// requestHeader appends a request header v1 (size placeholder, API key,
// version, correlation id placeholder, client id) to b. The size is set by
// setFrameSize once the request is complete.
func requestHeader(b []byte, key protocol.ApiKey, version int16, clientID string) []byte {
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(key))
	b = binary.BigEndian.AppendUint16(b, uint16(version))
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(clientID)))
	return append(b, clientID...)
}

// setFrameSize writes the size of the request made of bufs into bufs[0].
func setFrameSize(bufs net.Buffers) {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	binary.BigEndian.PutUint32(bufs[0][:4], uint32(n-4))
}

// connKind separates connections by use: fetch and produce requests wait on
// the broker (for records, for acknowledgements), control requests must not
// queue behind them.
type connKind int8

const (
	kindData connKind = iota
	kindControl
)

type wireKey struct {
	id   int32
	kind connKind
}

// wire is one client's connections to the brokers of a cluster, and what it
// knows of them from metadata.
type wire struct {
	d     *connDialer
	seeds []string
	idle  time.Duration
	log   *slog.Logger

	mu     sync.Mutex
	addrs  map[int32]string
	conns  map[wireKey]*brokerConn
	seed   *brokerConn // a control connection to a seed address
	closed bool
}

func newWire(d *connDialer, seeds []string, log *slog.Logger) *wire {
	return &wire{d: d, seeds: seeds, idle: 5 * time.Minute, log: log,
		addrs: map[int32]string{}, conns: map[wireKey]*brokerConn{}}
}

// errUnknownBroker: metadata named a broker we have no address for.
var errUnknownBroker = errors.New("kafka: unknown broker")

// errWireClosed: the client was closed.
var errWireClosed = errors.New("kafka: client closed")

// conn returns an open connection of kind to broker id, dialing one if
// needed.
func (w *wire) conn(ctx context.Context, id int32, kind connKind) (*brokerConn, error) {
	k := wireKey{id, kind}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, errWireClosed
	}
	if c := w.conns[k]; c != nil && c.usable(w.idle) {
		w.mu.Unlock()
		return c, nil
	}
	addr, ok := w.addrs[id]
	w.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w %d", errUnknownBroker, id)
	}
	c, err := w.d.connect(ctx, addr)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		c.close()
		return nil, errWireClosed
	}
	if old := w.conns[k]; old != nil {
		if old.usable(w.idle) {
			c.close()
			return old, nil
		}
		old.close()
	}
	w.conns[k] = c
	return c, nil
}

// anyConn returns a control connection to any broker: a known one, else a
// seed address.
func (w *wire) anyConn(ctx context.Context) (*brokerConn, error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, errWireClosed
	}
	for k, c := range w.conns {
		if k.kind == kindControl && c.usable(w.idle) {
			w.mu.Unlock()
			return c, nil
		}
	}
	if w.seed != nil && w.seed.usable(w.idle) {
		c := w.seed
		w.mu.Unlock()
		return c, nil
	}
	ids := make([]int32, 0, len(w.addrs))
	for id := range w.addrs {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	var errs []error
	for _, id := range ids {
		c, err := w.conn(ctx, id, kindControl)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	for _, addr := range w.seeds {
		c, err := w.d.connect(ctx, addr)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		w.mu.Lock()
		if w.closed {
			w.mu.Unlock()
			c.close()
			return nil, errWireClosed
		}
		if w.seed != nil {
			w.seed.close()
		}
		w.seed = c
		w.mu.Unlock()
		return c, nil
	}
	if len(errs) == 0 {
		errs = append(errs, errors.New("no broker address"))
	}
	return nil, fmt.Errorf("kafka: no broker reachable: %w", errors.Join(errs...))
}

// metadata asks any broker for the metadata of topics (never creating
// them) and learns the brokers' addresses from it.
func (w *wire) metadata(ctx context.Context, topics []string, timeout time.Duration) (*metadataAPI.Response, error) {
	c, err := w.anyConn(ctx)
	if err != nil {
		return nil, err
	}
	if topics == nil {
		topics = []string{} // nil would ask for every topic
	}
	r, err := c.roundTrip(ctx, &metadataAPI.Request{TopicNames: topics}, 1, 8, timeout)
	if err != nil {
		return nil, fmt.Errorf("kafka: metadata: %w", err)
	}
	resp := r.(*metadataAPI.Response)
	w.mu.Lock()
	for _, b := range resp.Brokers {
		addr := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		if old, ok := w.addrs[b.NodeID]; ok && old != addr {
			for _, kind := range []connKind{kindData, kindControl} {
				if c := w.conns[wireKey{b.NodeID, kind}]; c != nil {
					c.close()
					delete(w.conns, wireKey{b.NodeID, kind})
				}
			}
		}
		w.addrs[b.NodeID] = addr
	}
	w.mu.Unlock()
	return resp, nil
}

// close closes every connection.
func (w *wire) close() {
	w.mu.Lock()
	w.closed = true
	conns := w.conns
	w.conns = map[wireKey]*brokerConn{}
	seed := w.seed
	w.seed = nil
	w.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	if seed != nil {
		seed.close()
	}
}

// The waits of the Consumer's and the Producer's event loops between
// attempts at a broker connection, a metadata refresh, a producer id or a
// fetch (clientRetry), and between resends of a partition's batch
// (partitionRetry). The loops keep their own timers, so they use only
// stream.Retry's Delay.
var (
	clientRetry    = stream.Retry{Min: 50 * time.Millisecond, Max: time.Second}
	partitionRetry = stream.Retry{Min: 20 * time.Millisecond, Max: time.Second}
)
