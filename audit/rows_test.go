package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// reportText is the report as every format renders it, to check that no
// value of a row leaks into it.
func reportText(t *testing.T, r *Report) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestVerifyTamperRowColumns (D6): a row whose raw value, region and
// jurisdiction are untouched, but whose other columns were changed as
// `update ... set event_id='renamed', user_id='someone-else',
// event=jsonb_set(event,'{country}','"DE"'), ruleset_version='99'` does,
// is row_mismatch naming the coordinates and the column, never the value.
func TestVerifyTamperRowColumns(t *testing.T) {
	for _, tc := range []struct {
		column string
		tamper func(r *storedRow)
	}{
		{"event_id", func(r *storedRow) { r.eventID = "renamed" }},
		{"user_id", func(r *storedRow) { r.userID = "someone-else" }},
		{"event", func(r *storedRow) {
			r.event = bytes.Replace(r.event, []byte(`"country":"US"`), []byte(`"country":"DE"`), 1)
		}},
		{"event", func(r *storedRow) { r.event = []byte(`not json`) }},
		{"ruleset_version", func(r *storedRow) { r.RulesetVersion = "99" }},
		{"ruleset_version", func(r *storedRow) { r.RulesetVersion = "" }},
	} {
		t.Run(tc.column, func(t *testing.T) {
			w := newWorld(t)
			w.run(10)
			row := &w.rows["us-postgres"][2]
			before := string(row.event)
			tc.tamper(row)
			if tc.column == "event" && string(row.event) == before {
				t.Fatal("the tampering changed nothing")
			}
			r := w.verify(VerifyConfig{})
			expect(t, r, "row_mismatch")
			f := r.Findings[0]
			if f.Store != "us-postgres" || f.Topic != row.Topic || f.Partition != row.Partition || f.Offset != row.Offset || f.Leaf < 0 {
				t.Fatalf("finding at %s (leaf %d), want the row's coordinates", f.where(), f.Leaf)
			}
			if !strings.Contains(f.Detail, "column "+tc.column+" differs") {
				t.Fatalf("detail %q does not name column %s", f.Detail, tc.column)
			}
			text := reportText(t, r)
			for _, v := range []string{"renamed", "someone-else", `"DE"`, "user-", "ev-", "not json", "99"} {
				if strings.Contains(text, v) {
					t.Fatalf("the report holds a value of the row (%q)", v)
				}
			}
		})
	}
	// All of it at once: one finding naming every column.
	w := newWorld(t)
	w.run(10)
	row := &w.rows["us-postgres"][1]
	row.eventID, row.userID, row.RulesetVersion = "renamed", "someone-else", "99"
	row.event = bytes.Replace(row.event, []byte(`"country":"US"`), []byte(`"country":"DE"`), 1)
	r := w.verify(VerifyConfig{})
	expect(t, r, "row_mismatch")
	if d := r.Findings[0].Detail; !strings.Contains(d, "columns ruleset_version, event_id, user_id, event differ") {
		t.Fatalf("detail %q", d)
	}
}

// TestVerifyRowColumnsWithoutDecoder: without a decoder the ruleset
// version is still checked against the leaf, the event columns are not,
// and the report says how many rows had them checked.
func TestVerifyRowColumnsWithoutDecoder(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	r := w.verify(VerifyConfig{})
	if r.Checked.Rows == 0 || r.Checked.RowContents != r.Checked.Rows {
		t.Fatalf("checked %+v: every row decoded", r.Checked)
	}
	w.decode = nil
	r = w.verify(VerifyConfig{})
	expect(t, r)
	if r.Checked.RowContents != 0 {
		t.Fatalf("checked %+v: no row decoded", r.Checked)
	}
	if !strings.Contains(reportText(t, r), "(0 with their event columns decoded again)") {
		t.Fatal("the report does not say that no row was decoded")
	}
	w.rows["us-postgres"][0].RulesetVersion = "99"
	expect(t, w.verify(VerifyConfig{}), "row_mismatch")
}

// TestVerifyRowUndecodable: a row whose stored value does not decode the
// way its source_topic column says (the column altered, or the verifier
// lacks the routers' schemas settings) is row_mismatch, and a decoder's
// other error (a registry out of reach) stops the verification.
func TestVerifyRowUndecodable(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	// A value the verifier cannot decode (here: a framing the sink did not
	// read it with, as if the verifier's schemas settings lacked the
	// sink's) is counted, not a finding: it is the value the sink logged.
	w.decode = func(ctx context.Context, topic string, raw []byte) (string, string, []byte, error) {
		return "", "", nil, fmt.Errorf("%w: unknown writer schema", ErrUndecodable)
	}
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if r.Checked.RowsUndecoded != r.Checked.Rows || !strings.Contains(r.RowsUndecodedWhy, "unknown writer schema") {
		t.Fatalf("checked %+v, why %q", r.Checked, r.RowsUndecodedWhy)
	}
	// A row's source_topic changed (its framing with it) is a mismatch
	// of that column.
	w.decode = decodeWorld
	w.rows["eu-objectstore"][0].sourceTopic = "other-events"
	r = w.verify(VerifyConfig{})
	expect(t, r, "row_mismatch")
	if d := r.Findings[0].Detail; !strings.Contains(d, "column source_topic differs") {
		t.Fatalf("detail %q", d)
	}
	w.decode = func(context.Context, string, []byte) (string, string, []byte, error) {
		return "", "", nil, errors.New("registry unreachable")
	}
	v, err := VerifyLog(context.Background(), w.store, VerifyConfig{LogKey: testLogPub, IngestCluster: ingest})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.VerifyStores(context.Background(), []StoreCheck{{Store: "us-postgres", Cluster: "a"}}, w); err == nil || !strings.Contains(err.Error(), "registry unreachable") {
		t.Fatalf("VerifyStores: %v, want the decoder's error", err)
	}
}

// TestVerifyRowCopies (D3): a copy of a real row at the same pinned-topic
// coordinates under a new event id (same raw value) is a finding, with
// and without a decoder; an identical copy (the object store's crash
// duplicate: a batch written again as an overlapping object) is the note
// duplicate_row, and verify passes.
func TestVerifyRowCopies(t *testing.T) {
	for _, decode := range []bool{true, false} {
		t.Run(fmt.Sprintf("decode=%v", decode), func(t *testing.T) {
			w := newWorld(t)
			w.run(10)
			if !decode {
				w.decode = nil
			}
			// The crash copy: every column the same.
			w.rows["eu-objectstore"] = append(w.rows["eu-objectstore"], w.rows["eu-objectstore"][3])
			r := w.verify(VerifyConfig{})
			expect(t, r)
			if got := codes(r.Notes); !slices.Equal(got, []string{"duplicate_row"}) {
				t.Fatalf("notes %v, want duplicate_row", got)
			}
			orig := w.rows["us-postgres"][4]
			if n := findingsOf(r.Notes, CodeDuplicateRow); n[0].Store != "eu-objectstore" || n[0].Offset != w.rows["eu-objectstore"][3].Offset {
				t.Fatalf("note at %s", n[0].where())
			}
			// The tampered copy: a new event id.
			cp := orig
			cp.eventID = "copied-" + orig.eventID
			w.rows["us-postgres"] = append(w.rows["us-postgres"], cp)
			r = w.verify(VerifyConfig{})
			expect(t, r, "row_mismatch")
			var copies int
			for _, f := range r.Findings {
				if f.Store != "us-postgres" || f.Offset != orig.Offset || f.Partition != orig.Partition {
					t.Fatalf("finding at %s", f.where())
				}
				if strings.Contains(f.Detail, "another row for the same pinned-topic record differs from this one in event_id") {
					copies++
				}
			}
			if copies != 1 {
				t.Fatalf("findings %+v: want one naming the copy's event_id", r.Findings)
			}
			if strings.Contains(reportText(t, r), "copied-") {
				t.Fatal("the report holds the copy's event id")
			}
		})
	}
}

// TestEventDigest: the canonical form forgives what a store does to a
// document's layout, and nothing else.
func TestEventDigest(t *testing.T) {
	same := [][2]string{
		{`{"a":1,"b":"x"}`, `{"b": "x", "a": 1}`},
		{`{"n":1.50}`, `{"n":1.5}`},
		{`{"n":15e-1}`, `{"n":1.5}`},
		{`{"n":1e21}`, `{"n":1000000000000000000000}`},
		{`{"n":-0.0}`, `{"n":0}`},
		{`{"s":"x\u0000y"}`, `{"s":"x\ufffdy"}`},
		{`{"a":1,"a":2}`, `{"a":2}`},
		{`[1,{"z":null,"y":[true,false]}]`, ` [ 1 , { "y" : [ true , false ] , "z" : null } ] `},
	}
	for _, p := range same {
		a, ok1 := EventDigest([]byte(p[0]))
		b, ok2 := EventDigest([]byte(p[1]))
		if !ok1 || !ok2 || a != b {
			t.Errorf("%s and %s: %v %v %v, want the same digest", p[0], p[1], ok1, ok2, a == b)
		}
	}
	differ := [][2]string{
		{`{"a":1}`, `{"a":2}`},
		{`{"a":1}`, `{"a":"1"}`},
		{`{"a":1}`, `{"b":1}`},
		{`[1,2]`, `[2,1]`},
		{`{"n":1.5}`, `{"n":15}`},
		{`{"n":100}`, `{"n":1}`},
		{`{"a":null}`, `{}`},
		{`{"s":"x"}`, `{"s":"X"}`},
	}
	for _, p := range differ {
		a, _ := EventDigest([]byte(p[0]))
		b, _ := EventDigest([]byte(p[1]))
		if a == b {
			t.Errorf("%s and %s have the same digest", p[0], p[1])
		}
	}
	for _, bad := range []string{``, `{`, `{"a":1} {}`, `{"a":1}x`, `nul`, "\xff"} {
		if d, ok := EventDigest([]byte(bad)); ok || !d.IsZero() {
			t.Errorf("%q: ok %v", bad, ok)
		}
	}
	// An exponent no arithmetic should be done on: fast, no panic.
	if _, ok := EventDigest([]byte(`{"n":1e999999999999999999999,"m":1e-999999999}`)); !ok {
		t.Error("a huge exponent is still a number")
	}
}

// TestVerifyRowRulesetIsThePlacingOne: a row's ruleset_version is the
// version that placed its record (the router's leaf, whose header the sink
// stores), not the one in force when the sink wrote it (its own leaf's).
func TestVerifyRowRulesetIsThePlacingOne(t *testing.T) {
	w := newWorld(t)
	for i := 0; i < 6; i++ {
		w.route(0, w.event(0, []string{"US", "EU"}[i%2], i))
	}
	w.flush()
	// A new version lands between routing and sinking.
	content := "jurisdictions: [US, EU] # v4\n"
	w.rs = RulesetRef{Version: 4, Digest: Sum([]byte(content))}
	w.log(Leaf{Kind: KindRuleset, Time: w.time, Actor: "rules", Ruleset: w.rs, Policy: w.policy, Content: content})
	w.sink("us-postgres", "us")
	w.sink("eu-objectstore", "eu")
	w.flush()
	w.integrate()
	if w.rows["us-postgres"][0].RulesetVersion != "3" {
		t.Fatal("the rows should hold the placing version")
	}
	expect(t, w.verify(VerifyConfig{}))
	w.rows["us-postgres"][0].RulesetVersion = "4"
	r := w.verify(VerifyConfig{})
	expect(t, r, "row_mismatch")
	if d := r.Findings[0].Detail; !strings.Contains(d, "column ruleset_version differs") || !strings.Contains(d, "placed under ruleset version 3") {
		t.Fatalf("detail %q", d)
	}
}

// TestVerifyRowsTheVerifierCannotDecode: rows whose value the verifier
// cannot decode here (a schema registry out of reach) keep their other
// checks, are no finding, and the report says how many and why, in text
// and HTML; a tampered ruleset version among them is still caught.
func TestVerifyRowsTheVerifierCannotDecode(t *testing.T) {
	w := newWorld(t)
	w.run(10)
	w.decode = func(context.Context, string, []byte) (string, string, []byte, error) {
		return "", "", nil, fmt.Errorf("%w: source topic events: schema registry unavailable", ErrUndecodable)
	}
	r := w.verify(VerifyConfig{})
	expect(t, r)
	if r.Checked.Rows == 0 || r.Checked.RowsUndecoded != r.Checked.Rows || r.Checked.RowContents != 0 {
		t.Fatalf("checked %+v: every row left undecoded", r.Checked)
	}
	text := reportText(t, r)
	if !strings.Contains(text, fmt.Sprintf("%d NOT, the verifier could not decode them: ", r.Checked.Rows)) || !strings.Contains(text, "schema registry unavailable") {
		t.Fatalf("the report does not say the rows were not decoded:\n%s", text)
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "NOT, the verifier could not decode them") {
		t.Fatal("the HTML report does not say the rows were not decoded")
	}
	w.rows["us-postgres"][0].RulesetVersion = "99"
	expect(t, w.verify(VerifyConfig{}), "row_mismatch")
}
