package audit

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a verification found: the checkpoint verified, per-region
// counts, what was checked, findings and notes. It holds coordinates,
// codes and counts, never payloads.
type Report struct {
	// Checkpoint is the checkpoint verified.
	Checkpoint CheckpointInfo `json:"checkpoint"`
	// Previous is the earlier checkpoint it was shown to extend, if given.
	Previous *CheckpointInfo `json:"previous,omitempty"`
	// Window is a free description of the window (set by the caller).
	Window string `json:"window,omitempty"`
	// Witnessed is the number of witnesses whose cosignature on the
	// checkpoint was required and checked.
	Witnessed int `json:"witnessed,omitempty"`
	// Attestation says whether record attestations were checked.
	Attestation bool `json:"attestation_checked"`
	// Counts are, per region (and "(quarantine)", "(dead-letter)",
	// "(held)"), the ingest events decided and the records found.
	Counts map[string]*RegionCount `json:"counts"`
	// Checked counts what was looked at.
	Checked struct {
		// Leaves in the log.
		Leaves int64 `json:"leaves"`
		// Offsets of ingest topics.
		Offsets int64 `json:"offsets"`
		// TxnMarkers counts the ingest offsets of Offsets that hold a
		// transaction marker (no event, no leaf needed).
		TxnMarkers int64 `json:"txn_markers,omitempty"`
		// Aborted counts the ingest offsets of aborted records, read
		// read_committed as the router reads them (no event, no leaf
		// needed).
		Aborted int64 `json:"aborted,omitempty"`
		// Records of pinned, quarantine, dead-letter and hold topics.
		Records int64 `json:"records"`
		// Rows of stores.
		Rows int64 `json:"rows"`
		// RowContents counts the rows whose event_id, user_id and event
		// columns were compared with their stored value decoded again
		// (Row.Decoded); the others had only their value, region,
		// jurisdiction and ruleset version checked.
		RowContents int64 `json:"row_contents"`
		// RowsUndecoded counts the rows whose stored value the verifier
		// could not decode here (ErrUndecodable: a writer schema its
		// settings lack, a schema registry out of reach), so their event columns were not compared;
		// RowsUndecodedWhy says why (the first such row's reason).
		RowsUndecoded int64 `json:"rows_undecoded,omitempty"`
	} `json:"checked"`
	// RowsUndecodedWhy: see Checked.RowsUndecoded.
	RowsUndecodedWhy string `json:"rows_undecoded_why,omitempty"`
	// Findings fail the verification.
	Findings []Finding `json:"findings"`
	// Notes are explained irregularities.
	Notes []Finding `json:"notes"`
}

// CheckpointInfo describes a checkpoint in a report.
type CheckpointInfo struct {
	// Origin is the log's name.
	Origin string `json:"origin"`
	// Size is its number of leaves.
	Size int64 `json:"size"`
	// Root is its root hash, hex.
	Root string `json:"root"`
	// Signed is the signed note, to keep for the next verification.
	Signed string `json:"signed,omitempty"`
}

// RegionCount counts, for one region, the ingest events the window's
// leaves placed there and the records found in its pinned topic.
type RegionCount struct {
	// Region is the region, or "(quarantine)", "(dead-letter)", "(held)".
	Region string `json:"region"`
	// Events is the number of ingest offsets decided into it.
	Events int64 `json:"events"`
	// Records is the number of records checked in its pinned topic.
	Records int64 `json:"records"`
}

// OK reports whether the verification found nothing.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

func (r *Report) regions() []*RegionCount {
	out := make([]*RegionCount, 0, len(r.Counts))
	for _, c := range r.Counts {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *RegionCount) int { return strings.Compare(a.Region, b.Region) })
	return out
}

// noEvents says how many of the ingest offsets checked held no event (a
// transaction marker, an aborted record read read_committed), as
// " (N transaction markers, N aborted records)"; empty when none.
// undecoded says how many rows' event columns were not compared because
// the verifier could not decode their value here, and why ("" for none).
func (r *Report) undecoded() string {
	if r.Checked.RowsUndecoded == 0 {
		return ""
	}
	return fmt.Sprintf("; %d NOT, the verifier could not decode them: %s", r.Checked.RowsUndecoded, r.RowsUndecodedWhy)
}

func (r *Report) noEvents() string {
	var parts []string
	if n := r.Checked.TxnMarkers; n > 0 {
		parts = append(parts, fmt.Sprintf("%d transaction markers", n))
	}
	if n := r.Checked.Aborted; n > 0 {
		parts = append(parts, fmt.Sprintf("%d aborted records", n))
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// WriteJSON writes the report as indented JSON, for tools.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	cp := *r
	if cp.Findings == nil {
		cp.Findings = []Finding{}
	}
	if cp.Notes == nil {
		cp.Notes = []Finding{}
	}
	return enc.Encode(&cp)
}

func (f Finding) where() string {
	var b strings.Builder
	if f.Store != "" {
		fmt.Fprintf(&b, "store %s ", f.Store)
	}
	if f.Topic != "" {
		if f.Cluster != "" {
			fmt.Fprintf(&b, "%s:", f.Cluster)
		}
		fmt.Fprintf(&b, "%s/%d", f.Topic, f.Partition)
		if f.Offset >= 0 {
			fmt.Fprintf(&b, "@%d", f.Offset)
		}
	}
	if f.Leaf >= 0 {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "leaf %d", f.Leaf)
	}
	if b.Len() == 0 {
		return "log"
	}
	return strings.TrimSpace(b.String())
}

// WriteTable writes the report as text tables, for people.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	verdict := "PASS"
	if !r.OK() {
		verdict = fmt.Sprintf("FAIL: %d findings", len(r.Findings))
	}
	fmt.Fprintf(tw, "audit verify: %s\n", verdict)
	if r.Checkpoint.Root == "" {
		// Its signature or its format did not check: nothing of it is
		// shown as verified (the findings say why).
		fmt.Fprintf(tw, "checkpoint\tNOT verified (see the findings)\n")
	} else {
		fmt.Fprintf(tw, "checkpoint\t%s\tsize %d\troot %s\n", r.Checkpoint.Origin, r.Checkpoint.Size, r.Checkpoint.Root)
	}
	if r.Previous != nil {
		fmt.Fprintf(tw, "extends\tprevious checkpoint\tsize %d\troot %s\n", r.Previous.Size, r.Previous.Root)
	}
	if r.Witnessed > 0 {
		fmt.Fprintf(tw, "witnessed\tcosigned by %d required witnesses\n", r.Witnessed)
	}
	if r.Window != "" {
		fmt.Fprintf(tw, "window\t%s\n", r.Window)
	}
	att := "checked"
	if !r.Attestation {
		att = "NOT checked (no verify keys given)"
	}
	fmt.Fprintf(tw, "checked\t%d leaves, %d ingest offsets%s, %d records, %d rows (%d with their event columns decoded again%s); attestations %s\n",
		r.Checked.Leaves, r.Checked.Offsets, r.noEvents(), r.Checked.Records, r.Checked.Rows, r.Checked.RowContents, r.undecoded(), att)
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "REGION\tEVENTS\tRECORDS")
	for _, c := range r.regions() {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", c.Region, c.Events, c.Records)
	}
	for _, part := range []struct {
		title string
		fs    []Finding
	}{{"FINDING", r.Findings}, {"NOTE", r.Notes}} {
		if len(part.fs) == 0 {
			continue
		}
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "%s\tWHERE\tDETAIL\n", part.title)
		for _, f := range part.fs {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Code, f.where(), f.Detail)
		}
	}
	return tw.Flush()
}

var htmlReport = template.Must(template.New("report").Funcs(template.FuncMap{
	"where": Finding.where,
	"now":   func() string { return time.Now().UTC().Format(time.RFC3339) },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>residency audit verify: {{if .OK}}PASS{{else}}FAIL{{end}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
h1{font-size:1.5rem}.pass{color:#16652b}.fail{color:#a4161a}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}
th,td{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,monospace;font-size:.85rem}
pre{background:#f7f7f7;padding:.6rem;overflow-x:auto}
</style>
</head>
<body>
<h1 id="verdict" class="{{if .OK}}pass{{else}}fail{{end}}">{{if .OK}}PASS: no findings{{else}}FAIL: {{len .Findings}} findings{{end}}</h1>
<p>Generated {{now}} by <code>residency audit verify</code>.{{if .Window}} Window: {{.Window}}.{{end}}</p>
{{if .Checkpoint.Root}}<h2>Checkpoint verified</h2>{{else}}<h2>Checkpoint <strong>NOT verified</strong> (see the findings)</h2>{{end}}
<table id="checkpoint">
{{if .Checkpoint.Root}}<tr><th>log</th><td><code>{{.Checkpoint.Origin}}</code></td></tr>
<tr><th>size</th><td>{{.Checkpoint.Size}} leaves</td></tr>
<tr><th>root</th><td><code>{{.Checkpoint.Root}}</code></td></tr>{{end}}
{{with .Previous}}<tr><th>extends</th><td>the previous checkpoint of {{.Size}} leaves, root <code>{{.Root}}</code></td></tr>{{end}}
{{if .Witnessed}}<tr><th>witnessed</th><td>cosigned by {{.Witnessed}} required witnesses</td></tr>{{end}}
</table>
{{with .Checkpoint.Signed}}<details><summary>signed checkpoint (keep it for the next verification)</summary><pre>{{.}}</pre></details>{{end}}
<h2>Checked</h2>
<p>{{.Checked.Leaves}} leaves, {{.Checked.Offsets}} ingest offsets{{.NoEvents}}, {{.Checked.Records}} records, {{.Checked.Rows}} rows ({{.Checked.RowContents}} with their event columns decoded again{{with .Undecoded}}<strong>{{.}}</strong>{{end}});
attestations {{if .Attestation}}checked{{else}}<strong>not checked</strong>{{end}}.</p>
<h2>Per region</h2>
<table id="regions"><tr><th>region</th><th>events decided</th><th>records checked</th></tr>
{{range .Regions}}<tr><td>{{.Region}}</td><td class="n">{{.Events}}</td><td class="n">{{.Records}}</td></tr>
{{end}}</table>
<h2>Findings</h2>
{{if .Findings}}<table id="findings"><tr><th>code</th><th>where</th><th>detail</th></tr>
{{range .Findings}}<tr><td><code>{{.Code}}</code></td><td>{{where .}}</td><td>{{.Detail}}</td></tr>
{{end}}</table>{{else}}<p id="findings">None.</p>{{end}}
<h2>Notes</h2>
{{if .Notes}}<table id="notes"><tr><th>code</th><th>where</th><th>detail</th></tr>
{{range .Notes}}<tr><td><code>{{.Code}}</code></td><td>{{where .}}</td><td>{{.Detail}}</td></tr>
{{end}}</table>{{else}}<p id="notes">None.</p>{{end}}
</body>
</html>
`))

// WriteHTML writes the report as one self-contained HTML page (no scripts,
// no external resources), for reviewers.
func (r *Report) WriteHTML(w io.Writer) error {
	return htmlReport.Execute(w, struct {
		*Report
		OK        bool
		Regions   []*RegionCount
		NoEvents  string
		Undecoded string
	}{r, r.OK(), r.regions(), r.noEvents(), r.undecoded()})
}
