package audit

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/errgroup"
)

// ErrAuditTopicChanged: re-reading the audit records of an interrupted
// integration batch gave other leaves than the first time. The integrator
// stops rather than write a different history.
var ErrAuditTopicChanged = errors.New("audit: the audit topic changed under an interrupted integration")

// ErrStateAhead: the log in the store is ahead of this integrator (another
// integrator is writing it). The integrator reloads its state.
var ErrStateAhead = errors.New("audit: another integrator moved the log")

// AuditRecord is one record of the audit topic: a value written by
// WireRecord (format 2), or format 1 by an earlier version.
type AuditRecord struct {
	// Partition and Offset are its coordinates in the audit topic.
	Partition int32
	// Offset: see Partition.
	Offset int64
	// Value is the record value.
	Value []byte
}

// Cursor is, per audit-topic partition, the next offset to integrate. A
// partition it lacks starts at its earliest offset.
type Cursor map[int32]int64

// Feed is the integrator's view of the audit topic.
type Feed interface {
	// Fetch returns up to max records at or after the cursor, in offset
	// order within each partition (partitions in any interleaving). It
	// blocks until at least one record is available, or until ctx is done
	// and then returns ctx's error. audittest.TestFeed checks an adapter.
	Fetch(ctx context.Context, from Cursor, max int) ([]AuditRecord, error)
	// Read returns exactly the records of partition p with offsets in
	// [from, to), in offset order.
	Read(ctx context.Context, p int32, from, to int64) ([]AuditRecord, error)
}

// IntegratorConfig configures an Integrator.
type IntegratorConfig struct {
	// Store is where the log lives (required).
	Store Store
	// Feed is the audit topic (required).
	Feed Feed
	// SignerKey is the log's note signer key, "PRIVATE+KEY+…" (required;
	// see GenerateLogKey and LoadLogKey).
	SignerKey string
	// BatchRecords is the most audit records integrated in one batch (one
	// checkpoint); default 64.
	BatchRecords int
	// Logger receives one line per skipped record; default slog.Default().
	Logger *slog.Logger
}

// Integrator appends the leaves of the audit topic to the tiled log and
// signs a checkpoint after each batch. It is crash-safe and idempotent:
// restarted at any moment (a new Integrator on the same store), it loses
// no leaf and integrates none twice. Not safe for concurrent use; one
// process should run one (see docs/audit.md on zombies).
type Integrator struct {
	cfg    IntegratorConfig
	signer note.Signer
	vkey   string
	tiles  *tileReader

	loaded bool
	size   int64
	root   Digest
	cursor Cursor
	bundle []byte // leaves of the last, partial, entry bundle

	skipped   atomic.Int64
	published atomic.Int64 // size, for Size while Run runs
}

type integratorState struct {
	Size   int64  `json:"size"`
	Root   string `json:"root"`
	Cursor Cursor `json:"cursor"`
}

type segment struct {
	Partition int32 `json:"partition"`
	From      int64 `json:"from"`
	To        int64 `json:"to"`
}

type intent struct {
	From     int64     `json:"from"`
	To       int64     `json:"to"`
	Root     string    `json:"root"`
	Segments []segment `json:"segments"`
}

// LoadLogKey reads the log's signer key from a file and returns it with
// its public (verifier) key.
func LoadLogKey(path string) (skey, vkey string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("%w: %w", ErrKey, err)
	}
	skey = string(bytes.TrimSpace(b))
	vkey, err = VerifierKey(skey)
	return skey, vkey, err
}

// VerifierKey derives the public note verifier key from an Ed25519 note
// signer key.
func VerifierKey(skey string) (string, error) {
	if _, err := note.NewSigner(skey); err != nil {
		return "", fmt.Errorf("%w: log signing key: %w", ErrKey, err)
	}
	parts := strings.SplitN(skey, "+", 5)
	raw, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", fmt.Errorf("%w: log signing key is not an Ed25519 note key", ErrKey)
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(parts[2], pub)
}

// NewIntegrator returns an integrator; it reads the store's state (and
// finishes an interrupted batch) at the first Step.
func NewIntegrator(cfg IntegratorConfig) (*Integrator, error) {
	if cfg.Store == nil || cfg.Feed == nil {
		return nil, errors.New("audit: integrator needs a store and a feed")
	}
	signer, err := note.NewSigner(cfg.SignerKey)
	if err != nil {
		return nil, fmt.Errorf("%w: log signing key: %w", ErrKey, err)
	}
	vkey, err := VerifierKey(cfg.SignerKey)
	if err != nil {
		return nil, err
	}
	if cfg.BatchRecords <= 0 {
		cfg.BatchRecords = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Integrator{cfg: cfg, signer: signer, vkey: vkey}, nil
}

// Size returns the number of leaves integrated, as of the last batch. It
// is safe to call while Run runs (for a metric).
func (it *Integrator) Size() int64 { return it.published.Load() }

// Skipped returns how many audit records could not be decoded and were
// skipped (their leaves are missing from the log; verify reports the
// offsets they were about). It is safe to call while Run runs.
func (it *Integrator) Skipped() int64 { return it.skipped.Load() }

// Run integrates until ctx is done; it returns nil then, or the first
// error that is not ErrStateAhead (after which it waits a little, up to 5s,
// and reloads).
func (it *Integrator) Run(ctx context.Context) error {
	wait := 100 * time.Millisecond
	for {
		_, err := it.Step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err == nil:
			wait = 100 * time.Millisecond
		case errors.Is(err, ErrStateAhead):
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
			wait = min(2*wait, 5*time.Second)
		default:
			return err
		}
	}
}

// Step integrates one batch: it fetches audit records (blocking until there
// are some), appends their leaves and signs a checkpoint. It returns the
// number of leaves added. After an error the next Step starts from the
// state in the store again.
func (it *Integrator) Step(ctx context.Context) (int, error) {
	if !it.loaded {
		if err := it.load(ctx); err != nil {
			return 0, err
		}
	}
	it.tiles.ctx = ctx
	recs, err := it.cfg.Feed.Fetch(ctx, it.cursor, it.cfg.BatchRecords)
	if err != nil {
		return 0, fmt.Errorf("audit: fetch audit records: %w", err)
	}
	n, err := it.integrate(ctx, recs, nil)
	if err != nil {
		it.loaded = false
	}
	return n, err
}

// load reads the state, redoes an interrupted batch, and makes sure the
// checkpoint and the public key are published.
func (it *Integrator) load(ctx context.Context) error {
	it.tiles = newTileReader(ctx, it.cfg.Store)
	st, err := it.readState(ctx)
	if err != nil {
		return err
	}
	it.size, it.cursor = st.Size, st.Cursor
	if it.cursor == nil {
		it.cursor = Cursor{}
	}
	if it.root, err = parseHexDigest(st.Root); err != nil {
		return fmt.Errorf("audit: integrator state: %w", err)
	}
	// The tiles must hash to the state's root.
	if it.size > 0 {
		th, err := tlog.TreeHash(it.size, tlog.TileHashReader(tlog.Tree{N: it.size, Hash: tlog.Hash(it.root)}, it.tiles))
		if err != nil || Digest(th) != it.root {
			return fmt.Errorf("audit: the log's tiles do not match the integrator state at size %d: %v", it.size, err)
		}
	}
	if it.bundle, err = it.readBundle(ctx); err != nil {
		return err
	}
	if _, err := it.cfg.Store.Get(ctx, PublicKeyPath); errors.Is(err, ErrNotFound) {
		if err := it.cfg.Store.Put(ctx, PublicKeyPath, []byte(it.vkey+"\n")); err != nil {
			return err
		}
	}
	// An interrupted batch from this size?
	raw, err := it.cfg.Store.Get(ctx, intentPrefix+strconv.FormatInt(it.size, 10))
	switch {
	case err == nil:
		var in intent
		if err := json.Unmarshal(raw, &in); err != nil {
			return fmt.Errorf("audit: intent at size %d: %w", it.size, err)
		}
		if _, err := it.redo(ctx, in); err != nil {
			return err
		}
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if err := it.ensureCheckpoint(ctx); err != nil {
		return err
	}
	it.published.Store(it.size)
	it.loaded = true
	return nil
}

func (it *Integrator) readState(ctx context.Context) (integratorState, error) {
	raw, err := it.cfg.Store.Get(ctx, statePath)
	if errors.Is(err, ErrNotFound) {
		return integratorState{Root: Digest(tlog.Hash{}).String()}, nil
	}
	if err != nil {
		return integratorState{}, err
	}
	var st integratorState
	if err := json.Unmarshal(raw, &st); err != nil {
		return integratorState{}, fmt.Errorf("audit: integrator state: %w", err)
	}
	return st, nil
}

func parseHexDigest(s string) (Digest, error) {
	if s == "" {
		return Digest{}, nil
	}
	return ParseDigest(s)
}

// emptyRoot is the RFC 6962 root of the empty tree, SHA-256 of nothing.
var emptyRoot = Sum(nil)

func (it *Integrator) ensureCheckpoint(ctx context.Context) error {
	raw, err := it.cfg.Store.Get(ctx, CheckpointPath)
	if err == nil {
		cp, err := OpenCheckpoint(raw, it.vkey)
		if err == nil && cp.Size == it.size && cp.Root == it.rootOrEmpty() {
			return nil
		}
		if err == nil && cp.Size > it.size {
			return fmt.Errorf("%w: checkpoint at %d, state at %d", ErrStateAhead, cp.Size, it.size)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	return it.writeCheckpoint(ctx)
}

func (it *Integrator) rootOrEmpty() Digest {
	if it.size == 0 {
		return emptyRoot
	}
	return it.root
}

// writeCheckpoint signs and publishes the checkpoint of the current tree,
// unless the published one is already larger (another integrator is ahead:
// the checkpoint does not go backwards).
func (it *Integrator) writeCheckpoint(ctx context.Context) error {
	if raw, err := it.cfg.Store.Get(ctx, CheckpointPath); err == nil {
		if cp, err := OpenCheckpoint(raw, it.vkey); err == nil && cp.Size > it.size {
			it.loaded = false
			return fmt.Errorf("%w: checkpoint at %d, this integrator at %d", ErrStateAhead, cp.Size, it.size)
		}
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	signed, err := signCheckpoint(it.signer, it.size, it.rootOrEmpty())
	if err != nil {
		return fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	return it.cfg.Store.Put(ctx, CheckpointPath, signed)
}

// readBundle returns the leaves of the partial entry bundle at the end of
// the log.
func (it *Integrator) readBundle(ctx context.Context) ([]byte, error) {
	w := int(it.size % tileWidth)
	if w == 0 {
		return nil, nil
	}
	return readTile(ctx, it.cfg.Store, tlog.Tile{H: TileHeight, L: -1, N: it.size / tileWidth, W: w})
}

// leavesOf decodes audit records into canonical leaves and their leaf
// hashes, the records split among GOMAXPROCS goroutines; records that do
// not decode are skipped and logged.
func (it *Integrator) leavesOf(recs []AuditRecord) ([][]byte, []tlog.Hash) {
	type part struct {
		leaves  [][]byte
		hashes  []tlog.Hash
		skipped []error
	}
	workers := min(runtime.GOMAXPROCS(0), len(recs))
	parts := make([]part, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := len(recs)*w/workers, len(recs)*(w+1)/workers
		wg.Go(func() {
			p := &parts[w]
			size := 0
			for _, r := range recs[lo:hi] {
				size += len(r.Value)
			}
			buf := make([]byte, 0, size*3+1024)
			var ends []int
			for _, r := range recs[lo:hi] {
				leaves, err := DecodeWireRecord(r.Value)
				mark, nends := len(buf), len(ends)
				for i := 0; err == nil && i < len(leaves); i++ {
					buf, err = AppendLeaf(buf, &leaves[i])
					ends = append(ends, len(buf))
				}
				if err != nil {
					buf, ends = buf[:mark], ends[:nends]
					p.skipped = append(p.skipped, fmt.Errorf("audit record %d/%d: %w", r.Partition, r.Offset, err))
				}
			}
			p.leaves = make([][]byte, len(ends))
			p.hashes = make([]tlog.Hash, len(ends))
			start := 0
			for i, end := range ends {
				p.leaves[i] = buf[start:end:end]
				p.hashes[i] = tlog.RecordHash(p.leaves[i])
				start = end
			}
		})
	}
	wg.Wait()
	var leaves [][]byte
	var hashes []tlog.Hash
	for _, p := range parts {
		leaves = append(leaves, p.leaves...)
		hashes = append(hashes, p.hashes...)
		for _, err := range p.skipped {
			it.skipped.Add(1)
			it.cfg.Logger.Error("audit record skipped: not decodable", "error", err)
		}
	}
	return leaves, hashes
}

// integrate integrates recs; with a non-nil redo it re-integrates the
// interrupted batch redo described, whose records are recs.
func (it *Integrator) integrate(ctx context.Context, recs []AuditRecord, redo *intent) (int, error) {
	leaves, hashes := it.leavesOf(recs)
	after := maps.Clone(it.cursor)
	if after == nil {
		after = Cursor{}
	}
	var segs []segment
	for _, r := range recs {
		if k := len(segs) - 1; k >= 0 && segs[k].Partition == r.Partition && r.Offset >= segs[k].To {
			segs[k].To = r.Offset + 1
		} else {
			segs = append(segs, segment{Partition: r.Partition, From: r.Offset, To: r.Offset + 1})
		}
		after[r.Partition] = r.Offset + 1
	}
	if len(leaves) == 0 {
		if redo != nil {
			return 0, fmt.Errorf("%w: batch from size %d has no leaves now", ErrAuditTopicChanged, it.size)
		}
		if len(recs) == 0 {
			return 0, nil
		}
		// Only skipped records: move the cursor past them.
		it.cursor = after
		return 0, it.writeState(ctx)
	}
	from, to := it.size, it.size+int64(len(leaves))
	r, root, err := it.compute(hashes)
	if err != nil {
		return 0, err
	}
	in := intent{From: from, To: to, Root: root.String(), Segments: segs}
	if redo != nil {
		if in.To != redo.To || in.Root != redo.Root {
			return 0, fmt.Errorf("%w: batch from size %d", ErrAuditTopicChanged, from)
		}
	} else {
		raw, _ := json.Marshal(in)
		err := it.cfg.Store.PutIfAbsent(ctx, intentPrefix+strconv.FormatInt(from, 10), raw)
		if errors.Is(err, ErrExists) {
			// Another integrator (or this one, before a crash it does not
			// remember) decided this batch: follow its intent.
			it.loaded = false
			return 0, fmt.Errorf("%w: an intent from size %d exists", ErrStateAhead, from)
		}
		if err != nil {
			return 0, err
		}
	}
	if err := it.writeTiles(ctx, from, to, leaves, r); err != nil {
		return 0, err
	}
	it.size, it.root, it.cursor = to, root, after
	if err := it.writeState(ctx); err != nil {
		return 0, err
	}
	if err := it.writeCheckpoint(ctx); err != nil {
		return 0, err
	}
	it.published.Store(it.size)
	return len(leaves), nil
}

// redo re-reads the records of an interrupted batch and integrates them.
func (it *Integrator) redo(ctx context.Context, in intent) (int, error) {
	if in.From != it.size {
		return 0, fmt.Errorf("audit: intent from %d, state at %d", in.From, it.size)
	}
	var recs []AuditRecord
	for _, s := range in.Segments {
		rs, err := it.cfg.Feed.Read(ctx, s.Partition, s.From, s.To)
		if err != nil {
			return 0, fmt.Errorf("audit: re-read audit records %d/%d-%d: %w", s.Partition, s.From, s.To, err)
		}
		recs = append(recs, rs...)
	}
	return it.integrate(ctx, recs, &in)
}

// compute returns a hash reader over the tree grown by leaves (the new
// stored hashes in memory, the old ones from the tiles) and its root.
func (it *Integrator) compute(leaves []tlog.Hash) (tlog.HashReader, Digest, error) {
	var base tlog.HashReader = tlog.HashReaderFunc(func([]int64) ([]tlog.Hash, error) {
		return nil, errors.New("audit: no hashes in an empty tree")
	})
	if it.size > 0 {
		base = tlog.TileHashReader(tlog.Tree{N: it.size, Hash: tlog.Hash(it.root)}, it.tiles)
	}
	overlay := make(map[int64]tlog.Hash, 2*len(leaves)+8)
	r := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		var miss []int64
		for i, x := range idx {
			if h, ok := overlay[x]; ok {
				out[i] = h
			} else {
				miss = append(miss, x)
			}
		}
		if len(miss) == 0 {
			return out, nil
		}
		got, err := base.ReadHashes(miss)
		if err != nil {
			return nil, err
		}
		k := 0
		for i, x := range idx {
			if _, ok := overlay[x]; !ok {
				out[i] = got[k]
				k++
			}
		}
		return out, nil
	})
	for i, leaf := range leaves {
		n := it.size + int64(i)
		hs, err := tlog.StoredHashesForRecordHash(n, leaf, r)
		if err != nil {
			return nil, Digest{}, fmt.Errorf("audit: hash leaf %d: %w", n, err)
		}
		at := tlog.StoredHashIndex(0, n)
		for k, h := range hs {
			overlay[at+int64(k)] = h
		}
	}
	root, err := tlog.TreeHash(it.size+int64(len(leaves)), r)
	if err != nil {
		return nil, Digest{}, err
	}
	return r, Digest(root), nil
}

// writeTiles writes the entry bundles and hash tiles of leaves [from, to),
// up to putParallel at a time.
func (it *Integrator) writeTiles(ctx context.Context, from, to int64, leaves [][]byte, r tlog.HashReader) error {
	type object struct {
		path string
		data []byte
	}
	var objs []object
	bundle := bytes.Clone(it.bundle)
	w := int(from % tileWidth)
	for i, leaf := range leaves {
		bundle = AppendBundle(bundle, leaf)
		w++
		n := from + int64(i)
		if w == tileWidth || n == to-1 {
			t := tlog.Tile{H: TileHeight, L: -1, N: n / tileWidth, W: w}
			objs = append(objs, object{TilePath(t), bundle})
			if w == tileWidth {
				bundle, w = nil, 0
			}
		}
	}
	tiles := tlog.NewTiles(TileHeight, from, to)
	for _, t := range tiles {
		data, err := tlog.ReadTileData(t, r)
		if err != nil {
			return err
		}
		objs = append(objs, object{TilePath(t), data})
		it.tiles.SaveTiles([]tlog.Tile{t}, [][]byte{data})
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(putParallel)
	for _, o := range objs {
		g.Go(func() error { return it.cfg.Store.Put(gctx, o.path, o.data) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	it.bundle = bundle
	return nil
}

// putParallel bounds the tile and bundle writes in flight (an object
// store's latency is per request).
const putParallel = 8

// writeState records the integrator's state, unless the store's is ahead
// (another integrator moved it): the state never goes backwards.
func (it *Integrator) writeState(ctx context.Context) error {
	cur, err := it.readState(ctx)
	if err != nil {
		return err
	}
	if cur.Size > it.size {
		it.loaded = false
		return fmt.Errorf("%w: state at %d, this integrator at %d", ErrStateAhead, cur.Size, it.size)
	}
	raw, _ := json.Marshal(integratorState{Size: it.size, Root: it.root.String(), Cursor: it.cursor})
	return it.cfg.Store.Put(ctx, statePath, raw)
}
