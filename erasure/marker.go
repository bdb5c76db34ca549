package erasure

import (
	"context"
	"fmt"
	"time"

	"github.com/residency-router/residency/audit"
)

// Guard is what a sink asks before it writes a batch: does an erasure
// cover any of these events? An event is covered when its user was erased
// at or after the event occurred: a redelivery, a replay or a late copy of
// an event from before the erasure is never stored again, while what the
// user does after the erasure is new data and is stored. An event with no
// occurred_at is covered whenever its user was erased (fail closed); one
// with no user id never is.
//
// A sink calls Erased once per batch (one round trip to the marker store,
// like the pin lookup); an error means the sink must not write the batch
// (it retries, as for any store failure): without the markers it cannot
// know, and it fails closed. A covered event is not written and not
// quarantined (a quarantine copy would keep the user's data); the sink
// commits it with its batch, counts it (reason "erased") and logs a
// sink_refusal leaf with reason "erased".
type Guard struct {
	markers  Markers
	subjects Subjects
}

// NewGuard returns a Guard over markers, hashing user ids with subjects
// (the same pseudonymisation key the erasure used).
func NewGuard(markers Markers, subjects Subjects) *Guard {
	return &Guard{markers: markers, subjects: subjects}
}

// Erased returns, for each event i (its user id and occurred_at), whether
// an erasure covers it. users and occurred have the same length.
func (g *Guard) Erased(ctx context.Context, users [][]byte, occurred []time.Time) ([]bool, error) {
	if len(users) != len(occurred) {
		return nil, fmt.Errorf("erasure: guard: %d users and %d times", len(users), len(occurred))
	}
	out := make([]bool, len(users))
	idx := map[audit.Digest]int{}
	var subjects []audit.Digest
	of := make([]int, len(users))
	for i, u := range users {
		of[i] = -1
		if len(u) == 0 {
			continue
		}
		d := g.subjects.Subject(u)
		j, ok := idx[d]
		if !ok {
			j = len(subjects)
			idx[d] = j
			subjects = append(subjects, d)
		}
		of[i] = j
	}
	if len(subjects) == 0 {
		return out, nil
	}
	at, err := g.markers.Lookup(ctx, subjects)
	if err != nil {
		return nil, fmt.Errorf("erasure: guard: erasure markers: %w", err)
	}
	if len(at) != len(subjects) {
		return nil, fmt.Errorf("erasure: guard: erasure markers: %d answers for %d users", len(at), len(subjects))
	}
	for i, j := range of {
		if j < 0 || at[j].IsZero() {
			continue
		}
		out[i] = occurred[i].IsZero() || !occurred[i].After(at[j])
	}
	return out, nil
}
