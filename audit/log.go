package audit

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"
)

// Log is a read-only view of the tiled log at one verified checkpoint.
// Everything it returns is checked against that checkpoint: hashes read
// from tiles by tlog's TileHashReader, leaves by the integrity check.
type Log struct {
	store Store
	vkey  string
	cp    Checkpoint
	tiles *tileReader
}

// OpenLog reads the log's checkpoint from store and verifies its signature
// with vkey (the log's note verifier key, obtained out of band).
func OpenLog(ctx context.Context, store Store, vkey string) (*Log, error) {
	raw, err := store.Get(ctx, CheckpointPath)
	if err != nil {
		return nil, err
	}
	return OpenLogAt(ctx, store, vkey, raw)
}

// OpenLogAt opens the log at a given signed checkpoint (an earlier one, or
// one a witness cosigned) instead of the latest: the tiles are
// append-only, so every checkpoint the log published stays readable.
func OpenLogAt(ctx context.Context, store Store, vkey string, signed []byte) (*Log, error) {
	cp, err := OpenCheckpoint(signed, vkey)
	if err != nil {
		return nil, err
	}
	return &Log{store: store, vkey: vkey, cp: cp, tiles: newTileReader(ctx, store)}, nil
}

// Checkpoint returns the verified checkpoint the log is read at.
func (l *Log) Checkpoint() Checkpoint { return l.cp }

// hashReader returns a reader of the tree's hashes from its tiles, each
// checked against the checkpoint.
func (l *Log) hashReader(ctx context.Context) tlog.HashReader {
	l.tiles.ctx = ctx
	return tlog.TileHashReader(l.cp.Tree(), l.tiles)
}

// Bundle returns the leaves of entry bundle n (256 leaves, fewer for the
// last), as stored: unverified until the caller hashes them (see Scan).
func (l *Log) Bundle(ctx context.Context, n int64) ([][]byte, error) {
	w := tileWidth
	if last := l.cp.Size / tileWidth; n == last {
		w = int(l.cp.Size % tileWidth)
	} else if n > last {
		return nil, fmt.Errorf("audit: bundle %d is past the checkpoint", n)
	}
	if w == 0 {
		return nil, nil
	}
	b, err := readTile(ctx, l.store, tlog.Tile{H: TileHeight, L: -1, N: n, W: w})
	if err != nil {
		return nil, err
	}
	leaves, err := SplitBundle(b)
	if err != nil {
		return nil, err
	}
	if len(leaves) != w {
		return nil, fmt.Errorf("audit: bundle %d holds %d leaves, want %d", n, len(leaves), w)
	}
	return leaves, nil
}

// hasher is RFC 6962 over SHA-256, as tlog's.
var hasher = rfc6962.New(crypto.SHA256)

// Scan reads every leaf of the log in order, recomputes the tree from them
// in O(log n) memory, and calls visit for each leaf with its index (the
// slice is only valid during the call). It returns ErrAlteredLog when the
// leaves do not hash to the checkpoint's root (a leaf changed, removed,
// inserted or reordered, or a bundle is missing), and, when prev is not
// nil, ErrNotExtending when the first prev.Size leaves do not hash to
// prev's root. visit's error stops the scan and is returned.
func (l *Log) Scan(ctx context.Context, prev *Checkpoint, visit func(index int64, leaf []byte) error) error {
	if prev != nil && prev.Size > l.cp.Size {
		return fmt.Errorf("%w: previous checkpoint has %d leaves, this one %d", ErrNotExtending, prev.Size, l.cp.Size)
	}
	f := compact.RangeFactory{Hash: hasher.HashChildren}
	r := f.NewEmptyRange(0)
	// A prefix that does not hash to prev's root is remembered, not
	// returned at once: when the leaves do not hash to this checkpoint's
	// root either, they were altered in the bucket (ErrAlteredLog), which
	// says more than "not extending" (and is what happened when prev is
	// this very checkpoint); only leaves that do hash to the signed root
	// but not to prev's make a checkpoint that does not extend prev.
	var prevErr error
	checkPrev := func() error {
		if prev == nil || prevErr != nil || uint64(prev.Size) != r.End() {
			return nil
		}
		root, err := rootOf(r)
		if err != nil {
			return err
		}
		if !bytes.Equal(root, prev.Root[:]) {
			prevErr = fmt.Errorf("%w: the first %d leaves do not hash to the previous checkpoint's root", ErrNotExtending, prev.Size)
		}
		return nil
	}
	if err := checkPrev(); err != nil {
		return err
	}
	for n := int64(0); n*tileWidth < l.cp.Size; n++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		leaves, err := l.Bundle(ctx, n)
		if err != nil {
			return fmt.Errorf("%w: entry bundle %d: %w", ErrAlteredLog, n, err)
		}
		for i, leaf := range leaves {
			h := LeafHash(leaf)
			if err := r.Append(h[:], nil); err != nil {
				return err
			}
			if err := checkPrev(); err != nil {
				return err
			}
			if visit != nil {
				if err := visit(n*tileWidth+int64(i), leaf); err != nil {
					return err
				}
			}
		}
	}
	root, err := rootOf(r)
	if err != nil {
		return err
	}
	if !bytes.Equal(root, l.cp.Root[:]) {
		return fmt.Errorf("%w: the %d leaves do not hash to the checkpoint's root", ErrAlteredLog, l.cp.Size)
	}
	return prevErr
}

func rootOf(r *compact.Range) ([]byte, error) {
	if r.End() == 0 {
		return hasher.EmptyRoot(), nil
	}
	return r.GetRootHash(nil)
}

// Errors of the log's integrity; callers branch with errors.Is.
var (
	// ErrAlteredLog: the leaves do not hash to the checkpoint's root.
	ErrAlteredLog = errors.New("audit: log altered")
	// ErrNotExtending: a checkpoint is not an extension of an earlier one.
	ErrNotExtending = errors.New("audit: checkpoint does not extend the previous one")
)

// ProveExtends checks, with a consistency proof built from the tiles, that
// the log's checkpoint extends prev, and returns the proof.
func (l *Log) ProveExtends(ctx context.Context, prev Checkpoint) ([]Digest, error) {
	if prev.Size > l.cp.Size {
		return nil, fmt.Errorf("%w: previous checkpoint has %d leaves, this one %d", ErrNotExtending, prev.Size, l.cp.Size)
	}
	if prev.Size == 0 {
		return nil, nil
	}
	p, err := tlog.ProveTree(l.cp.Size, prev.Size, l.hashReader(ctx))
	if err != nil {
		return nil, fmt.Errorf("audit: consistency proof: %w", err)
	}
	if err := tlog.CheckTree(p, l.cp.Size, tlog.Hash(l.cp.Root), prev.Size, tlog.Hash(prev.Root)); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotExtending, err)
	}
	out := make([]Digest, len(p))
	for i, h := range p {
		out[i] = Digest(h)
	}
	return out, nil
}

// ProveLeaf returns the inclusion proof of leaf index in the checkpoint's
// tree (the RFC 6962 audit path, leaf to root).
func (l *Log) ProveLeaf(ctx context.Context, index int64) ([]Digest, error) {
	if index < 0 || index >= l.cp.Size {
		return nil, fmt.Errorf("audit: leaf %d is not in a log of %d leaves", index, l.cp.Size)
	}
	p, err := tlog.ProveRecord(l.cp.Size, index, l.hashReader(ctx))
	if err != nil {
		return nil, fmt.Errorf("audit: inclusion proof: %w", err)
	}
	out := make([]Digest, len(p))
	for i, h := range p {
		out[i] = Digest(h)
	}
	return out, nil
}
