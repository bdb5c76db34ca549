package erasure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/router/rules"
)

// Hashes makes the keyed hashes of user ids and event ids that leaves
// carry. *audit.Pseudonymizer satisfies it.
type Hashes interface {
	// Subject returns the keyed hash of a user id.
	Subject(userID []byte) audit.Digest
	// Event returns the keyed hash of an event id.
	Event(eventID []byte) audit.Digest
}

// CleanOptions are the choices and collaborators of one residue clean-up.
type CleanOptions struct {
	// DryRun finds and checks, and removes nothing.
	DryRun bool
	// Hashes makes the leaves' keyed hashes. Required with Ledger.
	Hashes Hashes
	// Ledger receives an erasure leaf per row before it is removed.
	// Default nil: no leaves.
	Ledger Ledger
	// Locker serialises the clean-up with erasures (both rewrite objects).
	// Default nil.
	Locker Locker
	// Actor names the clean-up in its leaves. Default "residue-clean".
	Actor string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// StoreClean is what a clean-up did in one store outside the
// jurisdiction's approved places.
type StoreClean struct {
	// Store and Region name the store.
	Store  string `json:"store"`
	Region string `json:"region"`
	// Residue is how many of its rows belong to the jurisdiction.
	Residue int64 `json:"residue"`
	// Removed is how many were removed (in a dry run: would be): those an
	// approved store of the jurisdiction's region also holds.
	Removed int64 `json:"removed"`
	// Kept is how many stay because no approved store holds them yet
	// (move them first: replay, then clean again).
	Kept int64 `json:"kept"`
	// KeptSample are the event ids of the first kept rows.
	KeptSample []string `json:"kept_sample,omitempty"`
	// Error says why the store could not be cleaned ("" when it was).
	Error string `json:"error,omitempty"`
}

// CleanReport is the result of a residue clean-up: counts and event ids,
// no payloads or user ids.
type CleanReport struct {
	// Jurisdiction, Region and RulesetVersion are as in ResidueReport.
	Jurisdiction   string `json:"jurisdiction"`
	Region         string `json:"region"`
	RulesetVersion int64  `json:"ruleset_version"`
	// DryRun is true when nothing was removed.
	DryRun bool `json:"dry_run"`
	// Stores are the stores outside the approved places.
	Stores []StoreClean `json:"stores"`
	// Removed and Kept are the totals.
	Removed int64 `json:"removed"`
	Kept    int64 `json:"kept"`
	// Leaves is how many audit leaves were appended.
	Leaves int `json:"leaves"`
}

// Clean removes the jurisdiction's rows from the stores outside its
// approved places, when a store approved for its region holds the same
// event (its event id): the copy left behind goes, the placed copy stays.
// A residue row no approved store holds is kept and counted: removing it
// would lose the event; move it first (replay it from a topic that still
// holds it, so the sinks of its region store it), then clean again. Kafka
// topics are not cleaned here (see Purger and docs/erasure.md).
//
// Each row removed gets an erasure leaf (its store, the keyed hashes of
// its event and user, reason "residue") before it is removed.
func (s *ResidueScanner) Clean(ctx context.Context, jurisdiction string, opts CleanOptions) (*CleanReport, error) {
	if opts.Ledger != nil && opts.Hashes == nil {
		return nil, fmt.Errorf("%w: residue clean: a pseudonymisation key is required for the audit leaves", ErrConfig)
	}
	if opts.Actor == "" {
		opts.Actor = "residue-clean"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	rs, err := s.cfg.Rules.Current()
	if err != nil {
		return nil, fmt.Errorf("erasure: residue clean: no ruleset in force: %w", err)
	}
	j, ok := rs.Jurisdiction(jurisdiction)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not in ruleset version %d", ErrUnknownJurisdiction, jurisdiction, rs.Version())
	}
	rep := &CleanReport{Jurisdiction: j.Name, Region: j.Region, RulesetVersion: rs.Version(), DryRun: opts.DryRun}
	var approved, outside []StoreRef
	for _, st := range s.cfg.Stores {
		if _, ok := st.Store.(RowStore); !ok {
			return nil, fmt.Errorf("%w: residue clean: store %q cannot look up or remove single events", ErrConfig, st.Name)
		}
		if rs.Approves(st.Name, j.Region) {
			approved = append(approved, st)
		} else {
			outside = append(outside, st)
		}
	}
	if len(approved) == 0 {
		return nil, fmt.Errorf("%w: residue clean: no store of the config is approved for region %s, so none holds the copies to keep: nothing is removed", ErrConfig, j.Region)
	}
	if !opts.DryRun && opts.Locker != nil {
		held, release, err := opts.Locker.Lock(ctx, LockName)
		if err != nil {
			return nil, fmt.Errorf("erasure: residue clean: %w", err)
		}
		defer release()
		ctx = held
	}
	var errs []error
	for _, st := range outside {
		sc := StoreClean{Store: st.Name, Region: st.Region}
		if err := s.cleanStore(ctx, rs, j.Name, st, approved, opts, &sc, rep); err != nil {
			sc.Error = err.Error()
			errs = append(errs, fmt.Errorf("store %s: %w", st.Name, err))
		}
		rep.Stores = append(rep.Stores, sc)
		rep.Removed += sc.Removed
		rep.Kept += sc.Kept
	}
	if len(errs) > 0 {
		return rep, fmt.Errorf("%w: residue clean: %w", ErrIncomplete, errors.Join(errs...))
	}
	return rep, nil
}

func (s *ResidueScanner) cleanStore(ctx context.Context, rs *rules.Ruleset, jur string, st StoreRef, approved []StoreRef,
	opts CleanOptions, sc *StoreClean, rep *CleanReport) error {
	type found struct{ id, user string }
	var rows []found
	var ps PlaceScan
	if err := s.scanStore(ctx, rs, jur, st, &ps, func(r *Row) { rows = append(rows, found{r.EventID, r.UserID}) }); err != nil {
		return err
	}
	sc.Residue = ps.Residue
	if len(rows) == 0 {
		return nil
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = r.id
	}
	held := map[string]bool{}
	for _, a := range approved {
		h, err := a.Store.(RowStore).HasEvents(ctx, ids)
		if err != nil {
			return fmt.Errorf("look up copies in %s: %w", a.Name, err)
		}
		for id := range h {
			held[id] = true
		}
	}
	var remove []string
	var leaves []audit.Leaf
	now := opts.Now().UnixMilli()
	for _, r := range rows {
		if !held[r.id] {
			sc.Kept++
			if len(sc.KeptSample) < 10 {
				sc.KeptSample = append(sc.KeptSample, r.id)
			}
			continue
		}
		remove = append(remove, r.id)
		if opts.Ledger != nil {
			leaves = append(leaves, audit.Leaf{Kind: audit.KindErasure, Time: now, Actor: opts.Actor,
				Event: opts.Hashes.Event([]byte(r.id)), Subject: opts.Hashes.Subject([]byte(r.user)), Decision: audit.Erased,
				Reason: "residue", Jurisdiction: jur, Region: st.Region, Dest: audit.Destination{Store: st.Name}, Count: 1})
		}
	}
	if opts.DryRun {
		sc.Removed = int64(len(remove))
		return nil
	}
	if len(leaves) > 0 {
		if err := opts.Ledger.Append(ctx, leaves); err != nil {
			return fmt.Errorf("audit leaves not appended, nothing removed: %w", err)
		}
		rep.Leaves += len(leaves)
	}
	n, err := st.Store.(RowStore).EraseEvents(ctx, remove)
	sc.Removed = int64(n)
	return err
}

// WriteText prints the clean-up report for people.
func (r *CleanReport) WriteText(w io.Writer) {
	verb := "removed"
	if r.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "Residue clean-up of %s (region %s, ruleset version %d): %s %d rows, kept %d without a copy in region %s\n",
		r.Jurisdiction, r.Region, r.RulesetVersion, verb, r.Removed, r.Kept, r.Region)
	for _, s := range r.Stores {
		line := fmt.Sprintf("  store %-28s region %-8s residue %d, %s %d, kept %d", s.Store, s.Region, s.Residue, verb, s.Removed, s.Kept)
		if len(s.KeptSample) > 0 {
			line += fmt.Sprintf(" (e.g. %v)", s.KeptSample)
		}
		if s.Error != "" {
			line += "; FAILED: " + s.Error
		}
		fmt.Fprintln(w, line)
	}
}

// WriteJSON writes the clean-up report as indented JSON.
func (r *CleanReport) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
