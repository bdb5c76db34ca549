package audit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	fmtlog "github.com/transparency-dev/formats/log"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
)

// ErrUnwitnessed: a checkpoint lacks a valid cosignature of a witness the
// reviewer requires.
var ErrUnwitnessed = errors.New("audit: checkpoint not cosigned by a required witness")

// witnessStatePath is, in a witness's own store, the last checkpoint it
// cosigned.
const witnessStatePath = "witness/checkpoint"

// Witness cosigns the log's checkpoints (C2SP tlog-cosignature,
// Ed25519 cosignature/v1) after checking that each extends the last one it
// cosigned, with a consistency proof it computes from the log's tiles. A
// log key holder who rewrites history, or shows reviewers two histories,
// cannot get both cosigned: reviewers who require the witness's
// cosignature (VerifyConfig.Witnesses) all see one history. The witness
// keeps its own state, apart from the log's bucket.
type Witness struct {
	signer note.Signer
	logKey string
	state  Store
}

// GenerateWitnessKey makes an Ed25519 key pair for a witness named name:
// skey for the witness, vkey (a cosignature/v1 verifier key) for reviewers.
func GenerateWitnessKey(name string) (skey, vkey string, err error) {
	skey, vkey, err = note.GenerateKey(rand.Reader, name)
	if err != nil {
		return "", "", err
	}
	vkey, err = fnote.VKeyToCosignatureV1(vkey)
	return skey, vkey, err
}

// NewWitness returns a witness with signer key skey, for the log whose
// public key is logKey, keeping its state in state.
func NewWitness(skey, logKey string, state Store) (*Witness, error) {
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		return nil, fmt.Errorf("%w: witness key: %w", ErrKey, err)
	}
	if _, err := note.NewVerifier(logKey); err != nil {
		return nil, fmt.Errorf("%w: log public key: %w", ErrKey, err)
	}
	return &Witness{signer: s, logKey: logKey, state: state}, nil
}

// Cosign reads the log's latest checkpoint, checks its signature and that
// it extends the last checkpoint this witness cosigned, records it, and
// returns it with the witness's cosignature added. A checkpoint that does
// not extend is refused with an error wrapping ErrNotExtending.
func (w *Witness) Cosign(ctx context.Context, logStore Store) ([]byte, error) {
	log, err := OpenLog(ctx, logStore, w.logKey)
	if err != nil {
		return nil, err
	}
	cp := log.Checkpoint()
	last, err := w.state.Get(ctx, witnessStatePath)
	switch {
	case err == nil:
		v, _ := note.NewVerifier(w.logKey)
		n, err := note.Open(last, note.VerifierList(v))
		if err != nil {
			return nil, fmt.Errorf("audit: witness state: %w", err)
		}
		var prev fmtlog.Checkpoint
		if _, err := prev.Unmarshal([]byte(n.Text)); err != nil {
			return nil, fmt.Errorf("audit: witness state: %w", err)
		}
		if _, err := log.ProveExtends(ctx, Checkpoint{Size: int64(prev.Size), Root: Digest(prev.Hash)}); err != nil {
			return nil, err
		}
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	v, _ := note.NewVerifier(w.logKey)
	n, err := note.Open(cp.Signed, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	cosigned, err := note.Sign(n, w.signer)
	if err != nil {
		return nil, fmt.Errorf("audit: cosign: %w", err)
	}
	if err := w.state.Put(ctx, witnessStatePath, cosigned); err != nil {
		return nil, err
	}
	return cosigned, nil
}

// checkWitnesses checks that signed carries a valid cosignature of every
// witness key (cosignature/v1 verifier keys).
func checkWitnesses(signed []byte, logKey string, witnesses []string) error {
	lv, err := note.NewVerifier(logKey)
	if err != nil {
		return fmt.Errorf("%w: log public key: %w", ErrKey, err)
	}
	vs := []note.Verifier{lv}
	for _, k := range witnesses {
		wv, err := fnote.NewVerifierForCosignatureV1(k)
		if err != nil {
			return fmt.Errorf("%w: witness key: %w", ErrKey, err)
		}
		vs = append(vs, wv)
	}
	n, err := note.Open(signed, note.VerifierList(vs...))
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	for _, wv := range vs[1:] {
		found := false
		for _, s := range n.Sigs {
			if s.Name == wv.Name() && s.Hash == wv.KeyHash() {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%w: %s", ErrUnwitnessed, wv.Name())
		}
	}
	return nil
}

// CheckWitnessKey reports whether vkey is a witness's public key
// (cosignature/v1 note verifier key, as GenerateWitnessKey makes it); the
// error wraps ErrKey.
func CheckWitnessKey(vkey string) error {
	if _, err := fnote.NewVerifierForCosignatureV1(vkey); err != nil {
		return fmt.Errorf("%w: not a witness public key: %w", ErrKey, err)
	}
	return nil
}
