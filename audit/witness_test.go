package audit

import (
	"context"
	"errors"
	"testing"
)

func TestWitnessCosignsExtensionsOnly(t *testing.T) {
	ctx := context.Background()
	wskey, wvkey, err := GenerateWitnessKey("witness.test")
	if err != nil {
		t.Fatal(err)
	}
	wit, err := NewWitness(wskey, testLogPub, &MemStore{})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t)
	w.run(5)
	first, err := wit.Cosign(ctx, w.store)
	if err != nil {
		t.Fatal(err)
	}
	w.run(5)
	second, err := wit.Cosign(ctx, w.store)
	if err != nil {
		t.Fatalf("an extension: %v", err)
	}
	// A reviewer requiring the witness verifies the cosigned checkpoint.
	r := w.verify(VerifyConfig{Checkpoint: second, Witnesses: []string{wvkey}, Previous: first})
	expect(t, r)
	if r.Witnessed != 1 {
		t.Fatalf("witnessed %d", r.Witnessed)
	}
	// The log's own checkpoint, without the cosignature, is not enough.
	expect(t, w.verify(VerifyConfig{Witnesses: []string{wvkey}}), "unwitnessed_checkpoint")
	// A proof made at the cosigned checkpoint checks with the log key alone.
	log, _ := OpenLogAt(ctx, w.store, testLogPub, second)
	p, err := Prove(ctx, log, 3)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := checkProof(p, testLogPub); err != nil {
		t.Fatal(err)
	}

	// The log key holder rewrites history: the witness refuses to cosign.
	fork := newWorld(t)
	fork.run(12)
	if _, err := wit.Cosign(ctx, fork.store); !errors.Is(err, ErrNotExtending) {
		t.Fatalf("a fork: Cosign = %v, want ErrNotExtending", err)
	}
	// And a checkpoint cosigned by another witness does not pass either.
	oskey, _, _ := GenerateWitnessKey("witness.test")
	other, _ := NewWitness(oskey, testLogPub, &MemStore{})
	forged, err := other.Cosign(ctx, fork.store)
	if err != nil {
		t.Fatal(err)
	}
	expect(t, fork.verify(VerifyConfig{Checkpoint: forged, Witnesses: []string{wvkey}}), "unwitnessed_checkpoint")
}

// TestCheckFormats: a real checkpoint and witness key pass the format
// checks `audit verify` runs on its file flags; a config, an empty file or
// a log's signing key do not.
func TestCheckFormats(t *testing.T) {
	w := newWorld(t)
	w.run(2)
	cp, err := w.store.Get(context.Background(), CheckpointPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckCheckpointFormat(cp); err != nil {
		t.Fatalf("a real checkpoint: %v", err)
	}
	for _, bad := range []string{"", "kafka:\n  clusters: {}\n", "residency.test/audit\n1\nnot base64\n\n— x y\n", testLogPub} {
		if err := CheckCheckpointFormat([]byte(bad)); !errors.Is(err, ErrBadCheckpoint) {
			t.Errorf("%q: %v, want ErrBadCheckpoint", bad, err)
		}
	}
	_, wpub, err := GenerateWitnessKey("w1")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckWitnessKey(wpub); err != nil {
		t.Fatalf("a real witness key: %v", err)
	}
	for _, bad := range []string{"", "kafka:\n  clusters: {}\n", "PRIVATE+KEY+x"} {
		if err := CheckWitnessKey(bad); !errors.Is(err, ErrKey) {
			t.Errorf("%q: %v, want ErrKey", bad, err)
		}
	}
}
