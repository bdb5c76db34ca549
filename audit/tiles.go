package audit

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// TileHeight is the height of the log's tiles: 256 hashes or leaves each,
// as C2SP tlog-tiles fixes.
const TileHeight = 8

const tileWidth = 1 << TileHeight

// Paths of the log's objects (see docs/audit.md).
const (
	// CheckpointPath is the latest signed checkpoint.
	CheckpointPath = "checkpoint"
	// PublicKeyPath is the log's note verifier key, for convenience only:
	// a reviewer must get the key out of band.
	PublicKeyPath = "log.pub"
	statePath     = "integrator/state"
	intentPrefix  = "integrator/intent/"
)

// TilePath returns the C2SP tlog-tiles path of a hash tile (L ≥ 0) or an
// entry bundle (L = -1): tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>].
func TilePath(t tlog.Tile) string {
	t.H = TileHeight
	p := strings.TrimPrefix(t.Path(), "tile/8/")
	if rest, ok := strings.CutPrefix(p, "data/"); ok {
		p = "entries/" + rest
	}
	return "tile/" + p
}

// AppendBundle appends a leaf to an entry bundle: a big-endian uint16
// length, then the leaf.
func AppendBundle(bundle, leaf []byte) []byte {
	bundle = binary.BigEndian.AppendUint16(bundle, uint16(len(leaf)))
	return append(bundle, leaf...)
}

// SplitBundle returns the leaves of an entry bundle.
func SplitBundle(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 2 {
			return nil, errors.New("audit: entry bundle: truncated length")
		}
		n := int(binary.BigEndian.Uint16(b))
		if len(b) < 2+n {
			return nil, errors.New("audit: entry bundle: truncated leaf")
		}
		out = append(out, b[2:2+n])
		b = b[2+n:]
	}
	return out, nil
}

// readTile returns the data of tile t (a hash tile of t.W hashes, or an
// entry bundle of t.W leaves): the partial object if t is partial and it
// exists, else the prefix of the full tile (logs may delete partial tiles
// once the full one exists).
func readTile(ctx context.Context, s Store, t tlog.Tile) ([]byte, error) {
	b, err := s.Get(ctx, TilePath(t))
	if err == nil || t.W == tileWidth || !errors.Is(err, ErrNotFound) {
		if err == nil && t.L >= 0 && len(b) != t.W*tlog.HashSize {
			return nil, fmt.Errorf("audit: %s: %d bytes, want %d", TilePath(t), len(b), t.W*tlog.HashSize)
		}
		return b, err
	}
	full := t
	full.W = tileWidth
	b, err = s.Get(ctx, TilePath(full))
	if err != nil {
		return nil, err
	}
	if t.L >= 0 {
		if len(b) != tileWidth*tlog.HashSize {
			return nil, fmt.Errorf("audit: %s: %d bytes, want %d", TilePath(full), len(b), tileWidth*tlog.HashSize)
		}
		return b[:t.W*tlog.HashSize], nil
	}
	leaves, err := SplitBundle(b)
	if err != nil {
		return nil, err
	}
	if len(leaves) < t.W {
		return nil, fmt.Errorf("audit: %s: %d leaves, want at least %d", TilePath(full), len(leaves), t.W)
	}
	var out []byte
	for _, l := range leaves[:t.W] {
		out = AppendBundle(out, l)
	}
	return out, nil
}

// tileReader is a tlog.TileReader over a Store, with a cache of the tiles
// it read (only hash tiles; tlog checks them against the tree before any
// hash is used).
type tileReader struct {
	ctx   context.Context
	store Store
	cache map[tlog.Tile][]byte
}

func newTileReader(ctx context.Context, s Store) *tileReader {
	return &tileReader{ctx: ctx, store: s, cache: make(map[tlog.Tile][]byte)}
}

func (r *tileReader) Height() int { return TileHeight }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if b, ok := r.cache[t]; ok {
			out[i] = b
			continue
		}
		b, err := readTile(r.ctx, r.store, t)
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func (r *tileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	if len(r.cache) > 4096 {
		clear(r.cache)
	}
	for i, t := range tiles {
		r.cache[t] = data[i]
	}
}
