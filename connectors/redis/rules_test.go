package redis

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

func newStore(t testing.TB) *Rules {
	t.Helper()
	r := testenv.NewRedis(t)
	return NewRules(r.Client(t), r.Prefix)
}

// small is a valid ruleset (as router/rules' validation tests use it).
const small = `jurisdictions:
  - name: US
    region: us
    countries: [US, PR]
  - name: EU
    region: eu
    countries: [FR, DE]
regions:
  - {name: us, cluster: ingest, topic: residency.us}
  - {name: eu, cluster: eu, topic: residency.eu}
stores:
  - {name: us-postgres, regions: [us]}
  - {name: eu-objectstore, regions: [eu]}
unplaceable: quarantine
`

func example(t *testing.T, name string) []byte {
	t.Helper()
	data, err := os.ReadFile("../../deploy/examples/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)

	if v, err := s.LatestVersion(ctx); err != nil || v != 0 {
		t.Fatalf("empty store: LatestVersion = %d, %v", v, err)
	}
	if _, _, err := s.Show(ctx, 0); !errors.Is(err, rules.ErrNotFound) {
		t.Fatalf("Show on an empty store = %v, want rules.ErrNotFound", err)
	}

	v1content := example(t, "rules.yaml")
	before := time.Now()
	v1, err := s.Apply(ctx, v1content, rules.ApplyOptions{Author: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if v1.Number != 1 || v1.Previous != 0 || v1.Author != "alice" || v1.SHA256 != rules.Hash(v1content) || v1.AppliedAt.Before(before.Add(-time.Second)) {
		t.Fatalf("v1 = %+v", v1)
	}
	v2, err := s.Apply(ctx, example(t, "rules-next.yaml"), rules.ApplyOptions{Base: 1, Author: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if v2.Number != 2 || v2.Previous != 1 {
		t.Fatalf("v2 = %+v", v2)
	}

	info, content, err := s.Show(ctx, 1)
	if err != nil || string(content) != string(v1content) || info.Author != "alice" || !info.AppliedAt.Equal(v1.AppliedAt) {
		t.Fatalf("Show(1) = %+v, %d bytes, %v", info, len(content), err)
	}
	if info, _, err := s.Show(ctx, 0); err != nil || info.Number != 2 {
		t.Fatalf("Show(current) = %+v, %v", info, err)
	}
	if _, _, err := s.Show(ctx, 9); !errors.Is(err, rules.ErrNotFound) {
		t.Fatalf("Show(9) = %v, want rules.ErrNotFound", err)
	}

	r, err := s.Load(ctx, 0)
	if err != nil || r.Version() != 2 || r.VersionString() != "2" {
		t.Fatalf("Load(current) = %v, %v", r, err)
	}
	if j, ok := r.JurisdictionOf([]byte("CH")); !ok || j.Name != "EU" {
		t.Fatalf("version 2 should place CH in EU")
	}

	d, err := rules.DiffVersions(ctx, s, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Countries) != 1 || d.Countries[0] != (rules.CountryChange{Country: "CH", ToJurisdiction: "EU", ToRegion: "eu"}) {
		t.Fatalf("diff 1 2 = %+v", d)
	}
	if got := strings.Join(d.Lines(), "\n"); got != "country CH: unassigned (quarantined) → jurisdiction EU, region eu" {
		t.Fatalf("diff words: %q", got)
	}

	v3, err := s.Rollback(ctx, 1, rules.ApplyOptions{Base: 2, Author: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	if v3.Number != 3 || v3.Previous != 2 || v3.Note != "rollback to 1" || v3.SHA256 != v1.SHA256 {
		t.Fatalf("v3 = %+v", v3)
	}
	if r, err := s.Load(ctx, 0); err != nil || r.Version() != 3 {
		t.Fatalf("after rollback: %v, %v", r, err)
	} else if _, ok := r.JurisdictionOf([]byte("CH")); ok {
		t.Fatalf("after rollback to 1, CH should be unassigned again")
	}
	if _, err := s.Rollback(ctx, 1, rules.ApplyOptions{Base: 3}); !errors.Is(err, rules.ErrUnchanged) {
		t.Fatalf("rollback to the current content = %v, want rules.ErrUnchanged", err)
	}

	h, err := s.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range h {
		got = append(got, fmt.Sprintf("%d<-%d %s %q", i.Number, i.Previous, i.Author, i.Note))
	}
	want := []string{`3<-2 carol "rollback to 1"`, `2<-1 bob ""`, `1<-0 alice ""`}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("history = %v, want %v", got, want)
	}
}

func TestApplyRefusesInvalidAndStale(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	bad := strings.Replace(small, "[FR, DE]", "[FR, XX]", 1)
	_, err := s.Apply(ctx, []byte(bad), rules.ApplyOptions{})
	var ve *rules.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Apply(invalid) = %v, want a *rules.ValidationError", err)
	}
	if v, err := s.LatestVersion(ctx); err != nil || v != 0 {
		t.Fatalf("an invalid apply wrote version %d (%v)", v, err)
	}
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{Author: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{Base: 1}); !errors.Is(err, rules.ErrUnchanged) {
		t.Fatalf("Apply(same content) = %v, want rules.ErrUnchanged", err)
	}
	// Based on version 0, but version 1 exists.
	_, err = s.Apply(ctx, example(t, "rules.yaml"), rules.ApplyOptions{Base: 0, Author: "bob"})
	if !errors.Is(err, rules.ErrConflict) || !strings.Contains(err.Error(), "version 1 was applied by alice at ") ||
		!strings.Contains(err.Error(), "based on version 0") {
		t.Fatalf("Apply(stale base) = %v, want rules.ErrConflict naming version 1 and alice", err)
	}
	if v, _ := s.LatestVersion(ctx); v != 1 {
		t.Fatalf("a refused apply changed the current version to %d", v)
	}
}

func TestConcurrentApply(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	if _, err := s.Apply(ctx, example(t, "rules.yaml"), rules.ApplyOptions{Author: "setup"}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			// Each applier changes something different, based on version 1.
			content := strings.Replace(string(example(t, "rules.yaml")), "countries: [JP]", fmt.Sprintf("countries: [JP] # change %d", i), 1)
			_, errs[i] = s.Apply(ctx, []byte(content), rules.ApplyOptions{Base: 1, Author: fmt.Sprintf("applier-%d", i)})
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("appliers %d and %d both won", winner, i)
			}
			winner = i
		case !errors.Is(err, rules.ErrConflict):
			t.Fatalf("applier %d: %v, want rules.ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no applier won")
	}
	for i, err := range errs {
		if i != winner && !strings.Contains(err.Error(), fmt.Sprintf("version 2 was applied by applier-%d", winner)) {
			t.Fatalf("applier %d's refusal does not name the winner: %v", i, err)
		}
	}
	if h, err := s.Versions(ctx); err != nil || len(h) != 2 || h[0].Author != fmt.Sprintf("applier-%d", winner) {
		t.Fatalf("history after the race: %+v, %v", h, err)
	}
}

// corrupt writes version v by hand, as a broken tool or person might, and
// makes it current.
func corrupt(t *testing.T, s *Rules, v int64, content, sum string) {
	t.Helper()
	ctx := context.Background()
	err := s.client.HSet(ctx, s.versionKey(v), "number", v, "sha256", sum, "author", "vandal",
		"applied_at", time.Now().UTC().Format(time.RFC3339Nano), "previous", v-1, "note", "", "content", content).Err()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.client.Set(ctx, s.currentKey(), v, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.client.Publish(ctx, s.rulesChannel(), v).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestLoadRefusesCorrupt(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	invalid := strings.Replace(small, "[FR, DE]", "[FR, XX]", 1)
	corrupt(t, s, 2, invalid, rules.Hash([]byte(invalid)))
	_, err := s.Load(ctx, 2)
	var ve *rules.ValidationError
	if !errors.Is(err, rules.ErrCorrupt) || !errors.As(err, &ve) {
		t.Fatalf("Load(invalid) = %v, want rules.ErrCorrupt and a *rules.ValidationError", err)
	}
	corrupt(t, s, 3, small+"# tampered\n", rules.Hash([]byte(small)))
	if _, err := s.Load(ctx, 3); !errors.Is(err, rules.ErrCorrupt) || !strings.Contains(err.Error(), "does not match its SHA-256") {
		t.Fatalf("Load(tampered) = %v, want rules.ErrCorrupt (hash)", err)
	}
}

func TestPinStore(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	s := newStore(t)
	if err := s.Pin(ctx, "u1", "EU"); !errors.Is(err, rules.ErrNotFound) {
		t.Fatalf("Pin before any ruleset = %v, want rules.ErrNotFound", err)
	}
	if _, err := s.Apply(ctx, []byte(small), rules.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(ctx, "u1", "MARS"); !errors.Is(err, rules.ErrNotFound) || !strings.Contains(err.Error(), `jurisdiction "MARS" is not in version 1 (it has US, EU)`) {
		t.Fatalf("Pin(unknown jurisdiction) = %v", err)
	}
	for _, p := range []rules.Pin{{UserID: "u2", Jurisdiction: "US"}, {UserID: "u1", Jurisdiction: "EU"}} {
		if err := s.Pin(ctx, p.UserID, p.Jurisdiction); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.LookupPins(ctx, [][]byte{[]byte("u1"), []byte("nobody"), []byte("u2")})
	if err != nil || strings.Join(got, ",") != "EU,,US" {
		t.Fatalf("LookupPins = %q, %v", got, err)
	}
	if list, err := s.ListPins(ctx); err != nil || fmt.Sprint(list) != "[{u1 EU} {u2 US}]" {
		t.Fatalf("ListPins = %v, %v", list, err)
	}
	if err := s.Unpin(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unpin(ctx, "u1"); !errors.Is(err, rules.ErrNotFound) {
		t.Fatalf("Unpin twice = %v, want rules.ErrNotFound", err)
	}
	if list, err := s.ListPins(ctx); err != nil || fmt.Sprint(list) != "[{u2 US}]" {
		t.Fatalf("ListPins after unpin = %v, %v", list, err)
	}
}

// TestRestore (real Redis): versions from the history topic are written
// back as they were (record and content) after Redis lost its data, the
// highest becomes current in one step (one announcement), a version Redis
// holds with other content is left and reported unless replace is set.
func TestRestore(t *testing.T) {
	ctx := testenv.Context(t, 30*time.Second)
	r := testenv.NewRedis(t)
	s := NewRules(r.Client(t), r.Prefix)
	var archive []rules.Archived
	for i, content := range [][]byte{[]byte(small), example(t, "rules.yaml"), example(t, "rules-next.yaml")} {
		info, err := s.Apply(ctx, content, rules.ApplyOptions{Base: int64(i), Author: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		archive = append(archive, rules.Archived{Info: info, Content: content})
	}
	before, err := s.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.DeleteKeys(t)

	sub := s.client.Subscribe(ctx, s.rulesChannel())
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	written, err := s.Restore(ctx, archive, false)
	if err != nil || len(written) != 3 {
		t.Fatalf("Restore = %v, %v", written, err)
	}
	after, err := s.Versions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 3 {
		t.Fatalf("%d versions after restore", len(after))
	}
	for i := range after {
		if after[i].Number != before[i].Number || after[i].SHA256 != before[i].SHA256 || after[i].Author != before[i].Author ||
			!after[i].AppliedAt.Equal(before[i].AppliedAt) || after[i].Previous != before[i].Previous {
			t.Fatalf("version %d restored as %+v, was %+v", after[i].Number, after[i], before[i])
		}
	}
	if head, err := s.Latest(ctx); err != nil || head.Version != 3 || head.Digest != archive[2].Info.SHA256 {
		t.Fatalf("Latest = %+v, %v", head, err)
	}
	m, err := sub.ReceiveMessage(ctx)
	if err != nil || m.Payload != "3" {
		t.Fatalf("announcement %v, %v; want version 3", m, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	if m, err := sub.ReceiveMessage(rctx); err == nil {
		t.Fatalf("a second announcement: %q", m.Payload)
	}
	cancel()

	// Restoring again changes nothing.
	if written, err := s.Restore(ctx, archive, false); err != nil || len(written) != 0 {
		t.Fatalf("Restore again = %v, %v", written, err)
	}

	// Version 2 re-applied with other content: left unless replace.
	other := rules.Archived{Info: archive[1].Info, Content: []byte(strings.Replace(small, "[US, PR]", "[US]", 1))}
	other.Info.SHA256 = rules.Hash(other.Content)
	if _, err := s.Restore(ctx, []rules.Archived{other}, false); !errors.Is(err, rules.ErrContentChanged) || !strings.Contains(err.Error(), "[2]") {
		t.Fatalf("Restore of other content = %v, want ErrContentChanged", err)
	}
	if info, _, err := s.Show(ctx, 2); err != nil || info.SHA256 != archive[1].Info.SHA256 {
		t.Fatalf("version 2 changed without replace: %+v, %v", info, err)
	}
	if written, err := s.Restore(ctx, []rules.Archived{other}, true); err != nil || len(written) != 1 {
		t.Fatalf("Restore with replace = %v, %v", written, err)
	}
	if info, content, err := s.Show(ctx, 2); err != nil || info.SHA256 != other.Info.SHA256 || string(content) != string(other.Content) {
		t.Fatalf("version 2 after replace: %+v, %v", info, err)
	}
	// A version whose content does not match its digest is refused.
	bad := archive[0]
	bad.Content = []byte(small + "\n")
	if _, err := s.Restore(ctx, []rules.Archived{bad}, true); !errors.Is(err, rules.ErrCorrupt) {
		t.Fatalf("Restore of a corrupt version = %v, want ErrCorrupt", err)
	}
}
