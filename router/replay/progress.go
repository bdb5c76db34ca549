package replay

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// ProgressView shows a replay's progress (Config.Progress: pass Update) on
// a writer: a bar redrawn in place on a terminal, a plain line every few
// seconds otherwise. Finish prints the last state.
type ProgressView struct {
	mu    sync.Mutex
	w     io.Writer
	mode  string // bar, lines or off
	id    string
	last  time.Time
	every time.Duration
	drawn bool
	p     Progress
}

// NewProgressView returns a view writing to w in mode: auto (a bar on a
// terminal, else lines), bar, lines or off; id names the replay.
func NewProgressView(w io.Writer, mode, id string) *ProgressView {
	if mode == "auto" {
		mode = "lines"
		if isTerminal(w) {
			mode = "bar"
		}
	}
	return &ProgressView{w: w, mode: mode, id: id, every: 5 * time.Second}
}

// isTerminal reports whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Update shows p.
func (v *ProgressView) Update(p Progress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.p = p
	switch v.mode {
	case "bar":
		if time.Since(v.last) < 100*time.Millisecond && p.Done < p.Total {
			return
		}
		v.last = time.Now()
		fmt.Fprintf(v.w, "\r%s", progressBar(p, 30))
		v.drawn = true
	case "lines":
		if time.Since(v.last) < v.every && !v.last.IsZero() {
			return
		}
		v.last = time.Now()
		fmt.Fprintf(v.w, "replay %s: %s\n", v.id, progressLine(p))
	}
}

// Finish shows the last progress for good.
func (v *ProgressView) Finish() {
	v.mu.Lock()
	defer v.mu.Unlock()
	switch {
	case v.mode == "bar" && v.drawn:
		fmt.Fprintf(v.w, "\r%s\n", progressBar(v.p, 30))
	case v.mode == "lines" && !v.last.IsZero():
		fmt.Fprintf(v.w, "replay %s: %s\n", v.id, progressLine(v.p))
	}
}

func progressBar(p Progress, width int) string {
	frac := 1.0
	if p.Total > 0 {
		frac = float64(p.Done) / float64(p.Total)
	}
	n := int(frac * float64(width))
	bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
	if n > 0 && n < width {
		bar = bar[:n-1] + ">" + bar[n:]
	}
	return fmt.Sprintf("[%s] %s", bar, progressLine(p))
}

func progressLine(p Progress) string {
	pct := 100.0
	if p.Total > 0 {
		pct = 100 * float64(p.Done) / float64(p.Total)
	}
	eta := "-"
	if p.ETA > 0 {
		eta = p.ETA.Round(time.Second).String()
	}
	return fmt.Sprintf("%d/%d (%.0f%%) written %d refused %d  %.0f ev/s  ETA %s ", p.Done, p.Total, pct, p.Written, p.Refused, p.Rate, eta)
}
