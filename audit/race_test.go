//go:build race

package audit

// raceOn is true in a -race build, where sync.Pool drops a share of what
// is put back on purpose: allocation counts of pooled code do not hold.
const raceOn = true
