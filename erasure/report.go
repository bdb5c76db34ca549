package erasure

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// WriteText prints the plan (or what the run did) for people: one line per
// partition.
func (p *PurgePlan) WriteText(w io.Writer) {
	verb := "deleted"
	if p.DryRun {
		verb = "would delete"
	}
	opts := []string{}
	if p.AfterSinks {
		opts = append(opts, "after sinks")
	}
	if p.MinAge != "" && p.MinAge != "0s" {
		opts = append(opts, "min age "+p.MinAge)
	}
	if p.Pinned {
		opts = append(opts, "pinned topics")
	}
	title := "Purge"
	if p.DryRun {
		title = "Purge (dry run)"
	}
	fmt.Fprintf(w, "%s at %s", title, p.Time.UTC().Format("2006-01-02T15:04:05Z"))
	if len(opts) > 0 {
		fmt.Fprintf(w, " (%s)", strings.Join(opts, ", "))
	}
	fmt.Fprintf(w, ": %s %d offsets\n\n", verb, p.Records)
	fmt.Fprintf(w, "  %-44s %4s %12s %12s %12s %10s  %s\n", "topic", "part", "log start", "delete to", "high water", "offsets", "held by")
	for _, pp := range p.Partitions {
		state := string(pp.HeldBy)
		if pp.Error != "" {
			state += "; FAILED: " + pp.Error
		}
		if pp.Detail != "" {
			state += " (" + pp.Detail + ")"
		}
		fmt.Fprintf(w, "  %-44s %4d %12d %12d %12d %10d  %s\n", string(pp.Role)+" "+pp.Name, pp.Partition, pp.LogStart, pp.Before, pp.HighWater, pp.Records, state)
	}
	for _, d := range p.Downstream {
		if d.Problem != "" {
			fmt.Fprintf(w, "\n  sink %s: %s", d.Name, d.Problem)
		}
	}
	if len(p.Downstream) > 0 {
		fmt.Fprintln(w)
	}
}

// WriteJSON writes the plan as indented JSON.
func (p *PurgePlan) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(p)
}

// WriteText prints the receipt for people.
func (r *Receipt) WriteText(w io.Writer) {
	title := "Erasure"
	verb := "removed"
	if r.DryRun {
		title, verb = "Erasure (dry run)", "would remove"
	}
	fmt.Fprintf(w, "%s of subject %s…: %s %d rows", title, r.Subject[:16], verb, r.Removed)
	if !r.DryRun {
		if r.Complete {
			fmt.Fprint(w, ", complete")
		} else {
			fmt.Fprint(w, ", INCOMPLETE (run it again)")
		}
	}
	fmt.Fprintln(w)
	if !r.MarkedAt.IsZero() {
		fmt.Fprintf(w, "  erasure marker recorded at %s: sinks store none of the user's events from before it\n", r.MarkedAt.Format("2006-01-02T15:04:05.000Z"))
	}
	for _, s := range r.Stores {
		line := fmt.Sprintf("  store %-28s region %-8s %s %d", s.Store, s.Region, verb, s.Removed)
		if s.Remaining >= 0 && !r.DryRun {
			line += fmt.Sprintf(", %d left", s.Remaining)
		}
		if s.Error != "" {
			line += "; FAILED: " + s.Error
		}
		fmt.Fprintln(w, line)
	}
	if r.Topics != nil {
		fmt.Fprintln(w, "\nKafka topics (records cannot be deleted one by one; see docs/erasure.md):")
	}
	for _, t := range r.Topics {
		fmt.Fprintf(w, "  %-11s %-40s %d of %d records", t.Role, t.String(), t.Records, t.Scanned)
		if t.Unreadable > 0 {
			fmt.Fprintf(w, ", %d unreadable (may be the user's)", t.Unreadable)
		}
		fmt.Fprintln(w)
		for _, p := range t.Partitions {
			var rs []string
			for _, s := range p.Ranges {
				if s.End == s.Start+1 {
					rs = append(rs, fmt.Sprint(s.Start))
				} else {
					rs = append(rs, fmt.Sprintf("%d-%d", s.Start, s.End-1))
				}
			}
			fmt.Fprintf(w, "      partition %d: offsets %s\n", p.Partition, strings.Join(rs, ","))
		}
		if t.Retention != nil {
			if t.Retention.Never {
				fmt.Fprintf(w, "      retention never removes them: %s\n", t.Retention.Note)
			} else {
				fmt.Fprintf(w, "      retention removes them not before %s: %s\n", t.Retention.NotBefore.UTC().Format("2006-01-02T15:04Z"), t.Retention.Note)
			}
		}
	}
}

// WriteJSON writes the receipt as indented JSON.
func (r *Receipt) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
