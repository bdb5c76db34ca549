package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
)

// reportWithFindings is a world with a few tamperings, verified.
func reportWithFindings(t *testing.T) (*world, *Report) {
	w := newWorld(t)
	w.run(20)
	w.rows["us-postgres"][0].Region = "eu"
	k := partKey{"a", "residency.us", 0}
	w.produce("a", "residency.us", 0, Record{Key: []byte("user-x"), Value: []byte("forged <script>alert(1)</script>"), Headers: w.topics[k][0].Headers})
	r := w.verify(VerifyConfig{})
	r.Window = "2026-11-18T00:00:00Z to 2026-11-25T00:00:00Z"
	return w, r
}

// assertNoPayloads checks that no record value or key of the world appears
// in out.
func assertNoPayloads(t *testing.T, w *world, out string) {
	t.Helper()
	for _, recs := range w.topics {
		for _, r := range recs {
			if len(r.Value) > 0 && strings.Contains(out, string(r.Value)) {
				t.Fatalf("a record value appears in the report")
			}
			if len(r.Key) > 0 && strings.Contains(out, string(r.Key)) {
				t.Fatalf("a record key (user id) %q appears in the report", r.Key)
			}
		}
	}
}

func TestReportJSONAndTable(t *testing.T) {
	w, r := reportWithFindings(t)
	var j bytes.Buffer
	if err := r.WriteJSON(&j); err != nil {
		t.Fatal(err)
	}
	assertNoPayloads(t, w, j.String())
	var back struct {
		Checkpoint CheckpointInfo          `json:"checkpoint"`
		Counts     map[string]*RegionCount `json:"counts"`
		Findings   []Finding               `json:"findings"`
		Notes      []Finding               `json:"notes"`
	}
	if err := json.Unmarshal(j.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Checkpoint.Size != r.Checkpoint.Size || back.Checkpoint.Signed == "" || back.Notes == nil {
		t.Errorf("checkpoint %+v", back.Checkpoint)
	}
	got := codes(back.Findings)
	for _, c := range []string{"row_mismatch", "unlogged_record", "bad_attestation"} {
		if !strings.Contains(strings.Join(got, " "), c) {
			t.Errorf("JSON findings %v lack %s", got, c)
		}
	}
	var tb bytes.Buffer
	if err := r.WriteTable(&tb); err != nil {
		t.Fatal(err)
	}
	out := tb.String()
	assertNoPayloads(t, w, out)
	for _, want := range []string{"audit verify: FAIL: 3 findings", "row_mismatch", "store us-postgres a:residency.us/0@0", "REGION", "window"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	_, ok := newWorldReport(t)
	if !strings.Contains(ok, "audit verify: PASS") {
		t.Errorf("clean table:\n%s", ok)
	}
}

func newWorldReport(t *testing.T) (*Report, string) {
	w := newWorld(t)
	w.run(5)
	r := w.verify(VerifyConfig{})
	var b bytes.Buffer
	r.WriteTable(&b)
	return r, b.String()
}

// htmlFacts walks a parsed page: element ids, whether any script, external
// resource or event handler is present, and the text.
func htmlFacts(t *testing.T, page []byte) (ids map[string]bool, external bool, text string) {
	doc, err := html.Parse(bytes.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	ids = map[string]bool{}
	var sb strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			if n.Data == "script" || n.Data == "link" || n.Data == "img" || n.Data == "iframe" {
				external = true
			}
			for _, a := range n.Attr {
				if a.Key == "id" {
					ids[a.Val] = true
				}
				if a.Key == "src" || a.Key == "href" || strings.HasPrefix(a.Key, "on") {
					external = true
				}
			}
		}
		if n.Type == html.TextNode {
			sb.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return ids, external, sb.String()
}

func TestReportHTMLIsSelfContained(t *testing.T) {
	w, r := reportWithFindings(t)
	var b bytes.Buffer
	if err := r.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	assertNoPayloads(t, w, b.String())
	ids, external, text := htmlFacts(t, b.Bytes())
	if external {
		t.Error("the page has a script, an external resource or an event handler")
	}
	for _, id := range []string{"verdict", "checkpoint", "regions", "findings", "notes"} {
		if !ids[id] {
			t.Errorf("no element #%s", id)
		}
	}
	for _, want := range []string{"FAIL: 3 findings", r.Checkpoint.Root, "unlogged_record", "row_mismatch"} {
		if !strings.Contains(text, want) {
			t.Errorf("page text lacks %q", want)
		}
	}
}

// TestReportHTMLInChromium opens the page in headless Chromium (Debian's
// package, /usr/bin/chromium) and reads back the DOM it rendered, and a
// screenshot. Chromium is not part of the dev stack: the test runs where it
// is installed (apt-get install -y chromium) and says so otherwise.
func TestReportHTMLInChromium(t *testing.T) {
	bin := os.Getenv("RESIDENCY_TEST_CHROMIUM")
	if bin == "" {
		bin, _ = exec.LookPath("chromium")
	}
	if bin == "" {
		t.Skip("Chromium not installed (apt-get install -y chromium, or set RESIDENCY_TEST_CHROMIUM)")
	}
	_, r := reportWithFindings(t)
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	var b bytes.Buffer
	r.WriteHTML(&b)
	if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	flags := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile")}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dom, err := exec.CommandContext(ctx, bin, append(flags, "--dump-dom", "file://"+page)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	ids, _, text := htmlFacts(t, dom)
	if !ids["findings"] || !strings.Contains(text, "FAIL: 3 findings") || !strings.Contains(text, "bad_attestation") {
		t.Fatalf("Chromium rendered:\n%s", dom)
	}
	shot := filepath.Join(dir, "report.png")
	if out := os.Getenv("RESIDENCY_TEST_SCREENSHOT"); out != "" {
		shot = out
	}
	if err := exec.CommandContext(ctx, bin, append(flags, "--screenshot="+shot, "--window-size=1200,1400", "file://"+page)...).Run(); err != nil {
		t.Fatalf("chromium --screenshot: %v", err)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() < 10000 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
}
