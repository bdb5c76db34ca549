package audit

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func testKey(id string) AttestKey {
	return AttestKey{ID: id, Secret: bytes.Repeat([]byte(id[:1]), 32)}
}

func sampleInput() AttestationInput {
	return AttestationInput{
		Value: Sum([]byte("value")), Key: Sum([]byte("key")),
		Decision: Routed, Jurisdiction: "EU", Region: "eu", RulesetVersion: 7,
		DestCluster: "b", DestTopic: "residency.eu",
		SrcTopic: "events", SrcPartition: 3, SrcOffset: 42,
	}
}

func TestAttestationRoundTripAndTampering(t *testing.T) {
	a, err := NewAttester(testKey("k1"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewAttestVerifier(testKey("k1"), testKey("k2"))
	if err != nil {
		t.Fatal(err)
	}
	in := sampleInput()
	tag := a.AppendTag(nil, &in)
	if !strings.HasPrefix(string(tag), "v1.k1.") || len(tag) != len("v1.k1.")+43 {
		t.Fatalf("tag %q", tag)
	}
	if err := v.Verify(tag, &in); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	// Every field is bound.
	changes := map[string]func(*AttestationInput){
		"value":         func(x *AttestationInput) { x.Value[0] ^= 1 },
		"key":           func(x *AttestationInput) { x.Key[0] ^= 1 },
		"null key":      func(x *AttestationInput) { x.KeyNull = true },
		"decision":      func(x *AttestationInput) { x.Decision = Quarantined },
		"reason":        func(x *AttestationInput) { x.Reason = "no_rule" },
		"jurisdiction":  func(x *AttestationInput) { x.Jurisdiction = "US" },
		"region":        func(x *AttestationInput) { x.Region = "us" },
		"ruleset":       func(x *AttestationInput) { x.RulesetVersion = 8 },
		"dest cluster":  func(x *AttestationInput) { x.DestCluster = "a" },
		"dest topic":    func(x *AttestationInput) { x.DestTopic = "residency.us" },
		"src topic":     func(x *AttestationInput) { x.SrcTopic = "events2" },
		"src partition": func(x *AttestationInput) { x.SrcPartition = 4 },
		"src offset":    func(x *AttestationInput) { x.SrcOffset = 43 },
		// Length prefixes keep field boundaries: moving a byte from one
		// field to the next changes the input.
		"boundary": func(x *AttestationInput) { x.Jurisdiction, x.Region = "EUe", "u" },
	}
	for name, change := range changes {
		x := in
		change(&x)
		if err := v.Verify(tag, &x); !errors.Is(err, ErrBadAttestation) {
			t.Errorf("%s changed: Verify = %v, want ErrBadAttestation", name, err)
		}
	}
	if err := v.Verify(nil, &in); !errors.Is(err, ErrNoAttestation) {
		t.Errorf("no tag: %v", err)
	}
	other, _ := NewAttester(AttestKey{ID: "k3", Secret: bytes.Repeat([]byte("z"), 32)})
	if err := v.Verify(other.AppendTag(nil, &in), &in); !errors.Is(err, ErrUnknownAttestationKey) {
		t.Errorf("unknown key: %v", err)
	}
	forged, _ := NewAttester(AttestKey{ID: "k1", Secret: bytes.Repeat([]byte("z"), 32)})
	if err := v.Verify(forged.AppendTag(nil, &in), &in); !errors.Is(err, ErrBadAttestation) {
		t.Errorf("right id, wrong secret: %v", err)
	}
	for _, bad := range []string{"v2.k1.xxx", "v1.k1", "v1.k1.short", "v1.k1." + strings.Repeat("!", 43), "garbage"} {
		if err := v.Verify([]byte(bad), &in); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAttestationKeyRotation(t *testing.T) {
	in := sampleInput()
	old, _ := NewAttester(testKey("old"))
	oldTag := old.AppendTag(nil, &in)
	// 1. Sinks verify with both keys; 2. routers sign with the new one.
	both, _ := NewAttestVerifier(testKey("old"), testKey("new"))
	nw, _ := NewAttester(testKey("new"))
	newTag := nw.AppendTag(nil, &in)
	if both.Verify(oldTag, &in) != nil || both.Verify(newTag, &in) != nil {
		t.Fatal("during rotation both tags must verify")
	}
	// 3. The old key retired: its records are refused.
	onlyNew, _ := NewAttestVerifier(testKey("new"))
	if err := onlyNew.Verify(oldTag, &in); !errors.Is(err, ErrUnknownAttestationKey) {
		t.Fatalf("retired key: %v", err)
	}
}

func TestAttestKeyChecks(t *testing.T) {
	if _, err := NewAttester(AttestKey{ID: "k", Secret: []byte("short")}); !errors.Is(err, ErrKey) {
		t.Errorf("short secret: %v", err)
	}
	if _, err := NewAttester(AttestKey{ID: "a.b", Secret: bytes.Repeat([]byte("x"), 32)}); !errors.Is(err, ErrKey) {
		t.Errorf("dot in id: %v", err)
	}
	if _, err := NewAttestVerifier(testKey("k1"), testKey("k1")); !errors.Is(err, ErrKey) {
		t.Errorf("duplicate id: %v", err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	os.WriteFile(p, []byte("  "+strings.Repeat("s", 44)+"\n"), 0o600)
	k, err := LoadAttestKey("k1", p)
	if err != nil || len(k.Secret) != 44 {
		t.Fatalf("LoadAttestKey = %d bytes, %v", len(k.Secret), err)
	}
	if _, err := LoadAttestKey("k1", filepath.Join(dir, "missing")); !errors.Is(err, ErrKey) {
		t.Errorf("missing file: %v", err)
	}
}

func TestAttestationDoesNotAllocate(t *testing.T) {
	a, _ := NewAttester(testKey("k1"))
	v, _ := NewAttestVerifier(testKey("k1"))
	in := sampleInput()
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { buf = a.AppendTag(buf[:0], &in) }); n != 0 {
		t.Errorf("AppendTag allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = v.Verify(buf, &in) }); n != 0 {
		t.Errorf("Verify allocates %v times", n)
	}
}

func TestPseudonymizer(t *testing.T) {
	if _, err := NewPseudonymizer([]byte("short")); !errors.Is(err, ErrKey) {
		t.Fatalf("short key: %v", err)
	}
	p, _ := NewPseudonymizer(bytes.Repeat([]byte("p"), 32))
	q, _ := NewPseudonymizer(bytes.Repeat([]byte("q"), 32))
	p2, _ := NewPseudonymizer(bytes.Repeat([]byte("p"), 32))
	if p.Subject([]byte("u1")) != p2.Subject([]byte("u1")) {
		t.Error("not deterministic")
	}
	if p.Subject([]byte("u1")) == p.Event([]byte("u1")) {
		t.Error("subject and event hashes of the same id must differ")
	}
	if p.Subject([]byte("u1")) == q.Subject([]byte("u1")) || p.Subject([]byte("u1")) == Sum([]byte("u1")) {
		t.Error("hash does not depend on the key")
	}
}

// TestPseudonymizerIsHMAC checks the keyed hashes against crypto/hmac over
// the documented input, for keys shorter and longer than SHA-256's block,
// ids of every length up to past a block, and from several goroutines
// sharing one Pseudonymizer (its pooled states); the string forms agree
// with the byte forms; neither allocates (outside -race: see raceOn).
func TestPseudonymizerIsHMAC(t *testing.T) {
	for _, secret := range [][]byte{bytes.Repeat([]byte("p"), 32), bytes.Repeat([]byte("L"), 100)} {
		p, err := NewPseudonymizer(secret)
		if err != nil {
			t.Fatal(err)
		}
		want := func(domain string, id []byte) Digest {
			m := hmac.New(sha256.New, secret)
			m.Write([]byte(domain))
			m.Write([]byte{0})
			m.Write(id)
			return Digest(m.Sum(nil))
		}
		done := make(chan struct{})
		for g := range 4 {
			go func() {
				defer func() { done <- struct{}{} }()
				for n := range 130 {
					id := bytes.Repeat([]byte{byte('a' + g)}, n)
					if got := p.Subject(id); got != want("residency-subject-v1", id) {
						t.Errorf("Subject of %d bytes differs from HMAC-SHA256", n)
					}
					if got := p.SubjectString(string(id)); got != want("residency-subject-v1", id) {
						t.Errorf("SubjectString of %d bytes differs from HMAC-SHA256", n)
					}
					if got := p.Event(id); got != want("residency-event-v1", id) {
						t.Errorf("Event of %d bytes differs from HMAC-SHA256", n)
					}
					if got := p.EventString(string(id)); got != want("residency-event-v1", id) {
						t.Errorf("EventString of %d bytes differs from HMAC-SHA256", n)
					}
				}
			}()
		}
		for range 4 {
			<-done
		}
		id, sid := []byte("u-1234567"), "6f1c2a4e-0000-4000-8000-000000000001"
		if n := testing.AllocsPerRun(100, func() { p.Subject(id); p.EventString(sid) }); n != 0 && !raceOn {
			t.Errorf("the keyed hashes allocate %v times", n)
		}
	}
}

// TestVerifyRecordIsVerify checks VerifyRecord against Verify over
// AttestationInputOf on records with every header absent, present,
// repeated, empty or not a number (and numbers out of range), keys nil,
// empty or not, in every role: the MAC input is the same bytes, the
// outcome the same, and the digests returned those of the value and key.
func TestVerifyRecordIsVerify(t *testing.T) {
	a, _ := NewAttester(testKey("k1"))
	v, _ := NewAttestVerifier(testKey("k0"), testKey("k1"))
	w, _ := NewAttestVerifier(testKey("k0"), testKey("k1"))
	values := map[string][][]byte{
		hdrJurisdiction: {nil, []byte("EU"), []byte("")},
		hdrRegion:       {nil, []byte("eu"), []byte("\xff\x00")},
		hdrRuleset:      {nil, []byte("7"), []byte("007"), []byte("-3"), []byte("x"), []byte("99999999999999999999")},
		hdrReason:       {nil, []byte("no_country")},
		hdrSrcTopic:     {nil, []byte("events")},
		hdrSrcPartition: {nil, []byte("3"), []byte("4294967296"), []byte("-1")},
		hdrSrcOffset:    {nil, []byte("42"), []byte(" 42")},
	}
	names := []string{hdrJurisdiction, hdrRegion, hdrRuleset, hdrReason, hdrSrcTopic, hdrSrcPartition, hdrSrcOffset}
	roles := []Role{RolePinned, RoleQuarantine, RoleDeadLetter, RoleHold, RoleSinkQuarantine}
	keys := [][]byte{nil, {}, []byte("user-1")}
	n := 0
	for i := range 3000 {
		var hs []Header
		hs = append(hs, Header{Key: "traceparent", Value: []byte("00-x")})
		for j, name := range names {
			opts := values[name]
			if x := opts[(i/(j+1)+j*i)%len(opts)]; x != nil {
				hs = append(hs, Header{Key: name, Value: x})
			}
			if (i+j)%11 == 0 { // a repeated header: the last one counts
				hs = append(hs, Header{Key: name, Value: opts[len(opts)-1]})
			}
		}
		role, key := roles[i%len(roles)], keys[(i/5)%len(keys)]
		value := []byte(fmt.Sprint("value ", i))
		in := AttestationInputOf("b", "residency.eu", role, key, value, hs)
		if got, want := appendRecordInput(nil, "b", "residency.eu", role, &in.Value, &in.Key, key == nil, hs), in.AppendInput(nil); !bytes.Equal(got, want) {
			t.Fatalf("record %d: input %q, want %q", i, got, want)
		}
		var tag []byte
		switch i % 4 {
		case 0, 1:
			tag = a.AppendTag(nil, &in)
		case 2:
			other := in
			other.SrcOffset++
			tag = a.AppendTag(nil, &other)
		}
		if tag != nil {
			hs = append(hs, Header{Key: HeaderAttestation, Value: []byte("v1.k1.stale")}, Header{Key: HeaderAttestation, Value: tag})
		}
		vs, ks, err := v.VerifyRecord("b", "residency.eu", role, key, value, hs)
		want := w.Verify(tag, &in)
		if (err == nil) != (want == nil) || (err != nil && err.Error() != want.Error()) {
			t.Fatalf("record %d: VerifyRecord = %v, Verify = %v", i, err, want)
		}
		if vs != in.Value || ks != in.Key {
			t.Fatalf("record %d: digests differ", i)
		}
		if err == nil {
			n++
		}
	}
	if n < 1000 {
		t.Errorf("only %d records verified", n)
	}
	hs := []Header{{Key: hdrJurisdiction, Value: []byte("EU")}}
	in := AttestationInputOf("b", "t", RolePinned, nil, []byte("v"), hs)
	hs = append(hs, Header{Key: HeaderAttestation, Value: a.AppendTag(nil, &in)})
	if n := testing.AllocsPerRun(100, func() { _, _, _ = v.VerifyRecord("b", "t", RolePinned, nil, []byte("v"), hs) }); n != 0 {
		t.Errorf("VerifyRecord allocates %v times", n)
	}
}
