package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/transparency-dev/merkle/proof"
)

// ProofFormat names the proof document's format.
const ProofFormat = "residency-audit-proof/v1"

// ErrBadProof is wrapped by every error of CheckProof about the proof
// itself (as opposed to a key that cannot be used).
var ErrBadProof = errors.New("audit: proof does not verify")

// ErrLeafNotFound: no leaf of the log matches.
var ErrLeafNotFound = errors.New("audit: no such leaf in the log")

// Proof is a self-contained inclusion proof of one leaf: with the log's
// public key alone, anyone can check that the leaf is in the log the
// signed checkpoint commits to.
type Proof struct {
	// Format is ProofFormat.
	Format string `json:"format"`
	// Leaf is the leaf, its canonical JSON as a string.
	Leaf string `json:"leaf"`
	// LeafIndex is its index in the log.
	LeafIndex int64 `json:"leaf_index"`
	// LeafHash is SHA-256(0x00 || leaf), hex.
	LeafHash string `json:"leaf_hash"`
	// TreeSize is the checkpoint's size.
	TreeSize int64 `json:"tree_size"`
	// RootHash is the checkpoint's root hash, hex.
	RootHash string `json:"root_hash"`
	// Inclusion is the RFC 6962 audit path from the leaf to the root,
	// hex, in order.
	Inclusion []string `json:"inclusion"`
	// Checkpoint is the signed checkpoint note.
	Checkpoint string `json:"checkpoint"`
}

// FindLeaf scans the log (checking its integrity on the way) and returns
// the index of the first leaf match accepts.
func FindLeaf(ctx context.Context, log *Log, match func(*Leaf) bool) (int64, error) {
	errFound := errors.New("found")
	at := int64(-1)
	err := log.Scan(ctx, nil, func(i int64, b []byte) error {
		l, err := ParseLeaf(b)
		if err == nil && match(&l) {
			at = i
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return at, nil
	}
	if err != nil {
		return -1, err
	}
	return -1, ErrLeafNotFound
}

// BySource matches the route leaf of an ingest record.
func BySource(topic string, partition int32, offset int64) func(*Leaf) bool {
	return func(l *Leaf) bool {
		return l.Kind == KindRoute && l.Src.Topic == topic && l.Src.Partition == partition && l.Src.Offset == offset
	}
}

// ByEvent matches the first leaf carrying an event's keyed hash (see
// Pseudonymizer.Event).
func ByEvent(event Digest) func(*Leaf) bool {
	return func(l *Leaf) bool { return l.Event == event }
}

// Prove returns the inclusion proof of leaf index at the log's checkpoint.
func Prove(ctx context.Context, log *Log, index int64) (*Proof, error) {
	cp := log.Checkpoint()
	leaves, err := log.Bundle(ctx, index/tileWidth)
	if err != nil {
		return nil, err
	}
	leaf := leaves[index%tileWidth]
	path, err := log.ProveLeaf(ctx, index)
	if err != nil {
		return nil, err
	}
	p := &Proof{
		Format: ProofFormat, Leaf: string(leaf), LeafIndex: index, LeafHash: LeafHash(leaf).String(),
		TreeSize: cp.Size, RootHash: cp.Root.String(), Inclusion: make([]string, len(path)),
		Checkpoint: string(cp.Signed),
	}
	for i, h := range path {
		p.Inclusion[i] = h.String()
	}
	// Never hand out a proof that does not check.
	if _, _, err := checkProof(p, log.vkey); err != nil {
		return nil, err
	}
	return p, nil
}

// CheckProof verifies a proof document offline with the log's public key
// (a note verifier key): the checkpoint's signature, then the leaf's
// inclusion in the tree it commits to (with transparency-dev/merkle, an
// implementation independent of the one that made the proof). It returns
// the leaf and the checkpoint.
func CheckProof(doc []byte, vkey string) (*Leaf, Checkpoint, error) {
	var p Proof
	if err := json.Unmarshal(doc, &p); err != nil {
		return nil, Checkpoint{}, fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	return checkProof(&p, vkey)
}

func checkProof(p *Proof, vkey string) (*Leaf, Checkpoint, error) {
	if p.Format != ProofFormat {
		return nil, Checkpoint{}, fmt.Errorf("%w: format %q, want %q", ErrBadProof, p.Format, ProofFormat)
	}
	cp, err := OpenCheckpoint([]byte(p.Checkpoint), vkey)
	if errors.Is(err, ErrBadCheckpoint) {
		return nil, Checkpoint{}, fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	if err != nil {
		return nil, Checkpoint{}, err
	}
	if cp.Size != p.TreeSize || cp.Root.String() != p.RootHash {
		return nil, cp, fmt.Errorf("%w: tree size or root differs from the signed checkpoint", ErrBadProof)
	}
	leafHash := LeafHash([]byte(p.Leaf))
	if leafHash.String() != p.LeafHash {
		return nil, cp, fmt.Errorf("%w: leaf_hash is not the hash of the leaf", ErrBadProof)
	}
	path := make([][]byte, len(p.Inclusion))
	for i, h := range p.Inclusion {
		if path[i], err = hex.DecodeString(h); err != nil || len(path[i]) != 32 {
			return nil, cp, fmt.Errorf("%w: inclusion hash %d is not 32 bytes of hex", ErrBadProof, i)
		}
	}
	if p.LeafIndex < 0 || p.LeafIndex >= p.TreeSize {
		return nil, cp, fmt.Errorf("%w: leaf index %d outside a tree of %d", ErrBadProof, p.LeafIndex, p.TreeSize)
	}
	if err := proof.VerifyInclusion(hasher, uint64(p.LeafIndex), uint64(p.TreeSize), leafHash[:], path, cp.Root[:]); err != nil {
		return nil, cp, fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	l, err := ParseLeaf([]byte(p.Leaf))
	if err != nil {
		return nil, cp, fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	return &l, cp, nil
}
