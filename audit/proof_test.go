package audit

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// logOf integrates n distinct leaves into a fresh store.
func logOf(t *testing.T, n int, batch int) (*MemStore, *Log) {
	t.Helper()
	store := &MemStore{}
	feed := newMemFeed(1)
	for off := 0; off < n; off += batch {
		var ls []Leaf
		for i := off; i < min(off+batch, n); i++ {
			ls = append(ls, routeLeaf(0, int64(i)))
		}
		feed.add(t, 0, ls...)
	}
	it, _ := NewIntegrator(IntegratorConfig{Store: store, Feed: feed, SignerKey: testLogKey, BatchRecords: 1})
	for {
		k, err := it.Step(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 {
			break
		}
	}
	log, err := OpenLog(context.Background(), store, testLogPub)
	if err != nil {
		t.Fatal(err)
	}
	return store, log
}

func TestProveEveryLeafOfOddSizes(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{1, 2, 255, 256, 257, 600} {
		_, log := logOf(t, n, 37)
		for i := int64(0); i < int64(n); i++ {
			p, err := Prove(ctx, log, i)
			if err != nil {
				t.Fatalf("size %d leaf %d: %v", n, i, err)
			}
			doc, _ := json.Marshal(p)
			l, cp, err := CheckProof(doc, testLogPub)
			if err != nil || l.Src.Offset != i || cp.Size != int64(n) {
				t.Fatalf("size %d leaf %d: CheckProof = %v, %+v", n, i, err, l)
			}
		}
	}
}

func TestProveBySourceAndEvent(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	pz, _ := NewPseudonymizer([]byte("0123456789abcdef0123456789abcdef"))
	w.run(10)
	// A sink leaf with the event's keyed hash.
	sl := Leaf{Kind: KindSinkWrite, Time: 1, Actor: "sink:us-postgres", Event: pz.Event([]byte("evt-42")), Decision: Written, Dest: Destination{Store: "us-postgres"}}
	sl.SetRecord(nil, []byte("x"))
	w.log(sl)
	w.flush()
	w.integrate()
	log, err := OpenLog(ctx, w.store, testLogPub)
	if err != nil {
		t.Fatal(err)
	}
	i, err := FindLeaf(ctx, log, BySource("events", 1, 4))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Prove(ctx, log, i)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := json.MarshalIndent(p, "", "  ")
	l, _, err := CheckProof(doc, testLogPub)
	if err != nil || l.Src.Partition != 1 || l.Src.Offset != 4 || l.Kind != KindRoute {
		t.Fatalf("CheckProof = %+v, %v", l, err)
	}
	if j, err := FindLeaf(ctx, log, ByEvent(pz.Event([]byte("evt-42")))); err != nil || j != log.Checkpoint().Size-1 {
		t.Fatalf("ByEvent = %d, %v", j, err)
	}
	if _, err := FindLeaf(ctx, log, BySource("events", 9, 9)); !errors.Is(err, ErrLeafNotFound) {
		t.Fatalf("absent leaf: %v", err)
	}

	// Every change to the document fails the check.
	_, otherPub, _ := GenerateLogKey("residency.test/audit")
	tamper := map[string]func(*Proof){
		"leaf":       func(p *Proof) { p.Leaf = p.Leaf[:len(p.Leaf)-2] + "9}" },
		"index":      func(p *Proof) { p.LeafIndex++ },
		"size":       func(p *Proof) { p.TreeSize++ },
		"path":       func(p *Proof) { p.Inclusion[0] = Sum(nil).String() },
		"short path": func(p *Proof) { p.Inclusion = p.Inclusion[1:] },
		"root":       func(p *Proof) { p.RootHash = Sum(nil).String() },
		"leaf hash":  func(p *Proof) { p.LeafHash = Sum(nil).String() },
		"checkpoint": func(p *Proof) { p.Checkpoint = p.Checkpoint[:10] + "x" + p.Checkpoint[11:] },
		"format":     func(p *Proof) { p.Format = "v0" },
	}
	for name, f := range tamper {
		q := *p
		q.Inclusion = append([]string(nil), p.Inclusion...)
		f(&q)
		b, _ := json.Marshal(&q)
		if _, _, err := CheckProof(b, testLogPub); !errors.Is(err, ErrBadProof) {
			t.Errorf("%s changed: CheckProof = %v", name, err)
		}
	}
	if _, _, err := CheckProof(doc, otherPub); !errors.Is(err, ErrBadProof) {
		t.Errorf("another key: %v", err)
	}
}

func TestProveExtendsAcrossSizes(t *testing.T) {
	ctx := context.Background()
	store := &MemStore{}
	feed := newMemFeed(1)
	it, _ := NewIntegrator(IntegratorConfig{Store: store, Feed: feed, SignerKey: testLogKey})
	var cps []Checkpoint
	off := int64(0)
	for _, n := range []int{1, 3, 252, 1, 300, 7} {
		var ls []Leaf
		for i := 0; i < n; i++ {
			ls = append(ls, routeLeaf(0, off))
			off++
		}
		feed.add(t, 0, ls...)
		if _, err := it.Step(ctx); err != nil {
			t.Fatal(err)
		}
		log, _ := OpenLog(ctx, store, testLogPub)
		cps = append(cps, log.Checkpoint())
	}
	log, _ := OpenLog(ctx, store, testLogPub)
	for _, prev := range cps {
		if _, err := log.ProveExtends(ctx, prev); err != nil {
			t.Errorf("from %d: %v", prev.Size, err)
		}
		if err := log.Scan(ctx, &prev, nil); err != nil {
			t.Errorf("scan from %d: %v", prev.Size, err)
		}
	}
	forged := cps[2]
	forged.Root[0] ^= 1
	if _, err := log.ProveExtends(ctx, forged); !errors.Is(err, ErrNotExtending) {
		t.Errorf("forged previous root: %v", err)
	}
	if err := log.Scan(ctx, &forged, nil); !errors.Is(err, ErrNotExtending) {
		t.Errorf("scan, forged previous root: %v", err)
	}
}

func TestScanCatchesMissingAndReorderedBundles(t *testing.T) {
	ctx := context.Background()
	store, log := logOf(t, 600, 100)
	b0, _ := store.Get(ctx, "tile/entries/000")
	b1, _ := store.Get(ctx, "tile/entries/001")
	store.Put(ctx, "tile/entries/000", b1)
	store.Put(ctx, "tile/entries/001", b0)
	if err := log.Scan(ctx, nil, nil); !errors.Is(err, ErrAlteredLog) {
		t.Errorf("reordered bundles: %v", err)
	}
	store.Delete("tile/entries/001")
	if err := log.Scan(ctx, nil, nil); !errors.Is(err, ErrAlteredLog) {
		t.Errorf("deleted bundle: %v", err)
	}
}

// TestCrossCheckInPython checks the leaf vectors and a proof with a
// verifier written in another language (testdata/crosscheck.py, Python's
// standard library only), as docs/audit.md says anyone can.
func TestCrossCheckInPython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed")
	}
	ctx := context.Background()
	_, log := logOf(t, 300, 37)
	dir := t.TempDir()
	for _, i := range []int64{0, 41, 255, 256, 299} {
		p, err := Prove(ctx, log, i)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(p)
		path := filepath.Join(dir, "proof.json")
		os.WriteFile(path, b, 0o644)
		out, err := exec.Command(py, "testdata/crosscheck.py", "testdata/leaves.json", path).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "ok" {
			t.Fatalf("leaf %d: crosscheck.py: %v\n%s", i, err, out)
		}
		// It fails on another leaf presented as a tree of its own (one
		// leaf, its hash the root) with the real signed checkpoint.
		forged := *p
		forged.Leaf = `{"v":1,"kind":"purge","time":1}`
		forged.LeafHash = LeafHash([]byte(forged.Leaf)).String()
		forged.LeafIndex, forged.TreeSize, forged.RootHash, forged.Inclusion = 0, 1, forged.LeafHash, []string{}
		b, _ = json.Marshal(&forged)
		os.WriteFile(path, b, 0o644)
		if out, err := exec.Command(py, "testdata/crosscheck.py", "testdata/leaves.json", path).CombinedOutput(); err == nil {
			t.Fatalf("leaf %d: a one-leaf tree not the checkpoint's passed: %s", i, out)
		}
		// And it fails on a wrong path.
		p.Inclusion[0] = Sum(nil).String()
		b, _ = json.Marshal(p)
		os.WriteFile(path, b, 0o644)
		if out, err := exec.Command(py, "testdata/crosscheck.py", "testdata/leaves.json", path).CombinedOutput(); err == nil {
			t.Fatalf("leaf %d: a wrong path passed: %s", i, out)
		}
	}
}
