package audit

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"

	fmtlog "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// ErrBadCheckpoint is wrapped by every error about a checkpoint that is not
// signed by the given key or does not parse.
var ErrBadCheckpoint = errors.New("audit: bad checkpoint")

// Checkpoint is a verified statement of the log's size and root hash.
type Checkpoint struct {
	// Origin names the log (the signing key's name).
	Origin string
	// Size is the number of leaves.
	Size int64
	// Root is the RFC 6962 root hash of those leaves.
	Root Digest
	// Signed is the signed note as published (C2SP tlog-checkpoint).
	Signed []byte
}

// Tree returns the checkpoint as a tlog.Tree.
func (c Checkpoint) Tree() tlog.Tree { return tlog.Tree{N: c.Size, Hash: tlog.Hash(c.Root)} }

// GenerateLogKey makes a new Ed25519 note key pair for a log named origin
// (e.g. "residency.example.com/audit"): skey goes in the integrator's key
// file, vkey is published.
func GenerateLogKey(origin string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, origin)
}

// LoadLogSigner reads a note signer key ("PRIVATE+KEY+…") from a file.
func LoadLogSigner(path string) (note.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrKey, err)
	}
	s, err := note.NewSigner(string(bytes.TrimSpace(b)))
	if err != nil {
		return nil, fmt.Errorf("%w: log signing key %s: %w", ErrKey, path, err)
	}
	return s, nil
}

// signCheckpoint returns the signed checkpoint note for a tree.
func signCheckpoint(s note.Signer, size int64, root Digest) ([]byte, error) {
	body := fmtlog.Checkpoint{Origin: s.Name(), Size: uint64(size), Hash: root[:]}.Marshal()
	return note.Sign(&note.Note{Text: string(body)}, s)
}

// OpenCheckpoint verifies a signed checkpoint with the log's public key
// (a note verifier key, "NAME+HASH+KEY") and returns it. The origin line
// must be the key's name.
func OpenCheckpoint(signed []byte, vkey string) (Checkpoint, error) {
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: log public key: %w", ErrKey, err)
	}
	cp, _, _, err := fmtlog.ParseCheckpoint(signed, v.Name(), v)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if len(cp.Hash) != 32 || cp.Size > 1<<62 {
		return Checkpoint{}, fmt.Errorf("%w: root hash or size out of range", ErrBadCheckpoint)
	}
	return Checkpoint{Origin: cp.Origin, Size: int64(cp.Size), Root: Digest(cp.Hash), Signed: bytes.Clone(signed)}, nil
}

// CheckCheckpointFormat reports whether b is a signed note whose text is a
// checkpoint (origin, size, root hash), without checking any signature:
// what a reviewer's checkpoint file must at least be. A file that is not
// even that (a config, a key) is a usage error; a well-formed checkpoint
// whose signature fails is a finding of the verification (bad_signature).
// The error wraps ErrBadCheckpoint.
func CheckCheckpointFormat(b []byte) error {
	_, err := note.Open(b, note.VerifierList())
	var u *note.UnverifiedNoteError
	if !errors.As(err, &u) {
		if err == nil {
			err = errors.New("no signature") // not reached: no verifier is known
		}
		return fmt.Errorf("%w: not a signed note: %w", ErrBadCheckpoint, err)
	}
	var cp fmtlog.Checkpoint
	if _, err := cp.Unmarshal([]byte(u.Note.Text)); err != nil {
		return fmt.Errorf("%w: a signed note, but not a checkpoint: %w", ErrBadCheckpoint, err)
	}
	return nil
}
