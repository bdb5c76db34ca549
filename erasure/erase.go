package erasure

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/residency-router/residency/audit"
)

// DefaultSettle is the default of EraseConfig.Settle.
const DefaultSettle = 30 * time.Second

// LockName is the name of the lock an erasure holds while it rewrites
// stores, so that two erasures never rewrite one object at once (each
// would put back the other's user).
const LockName = "erasure"

// EraseConfig configures an Eraser.
type EraseConfig struct {
	// Stores are every store of the config. Default: none.
	Stores []StoreRef
	// Subjects hashes user ids (the audit pseudonymisation key). Required.
	Subjects Subjects
	// Markers keeps the erasure markers the sinks honour. Required.
	Markers Markers
	// Locker serialises erasures. Default nil: the caller guarantees one
	// erasure at a time.
	Locker Locker
	// Ledger receives an erasure leaf per store and pass. Default nil: no
	// audit leaves.
	Ledger Ledger
	// Locator lists the user's events still in Kafka topics. Default nil:
	// topics are not searched.
	Locator *Locator
	// Actor names the erasure in its leaves. Default "erase".
	Actor string
	// Settle is how long the second pass waits after the first: longer than
	// a sink's longest write (its write_timeout, default 20s), so that a
	// batch a sink checked against the markers just before the erasure
	// marked the user has landed and is erased too. Default 30s.
	Settle time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives progress and failures (never the user id). Default
	// slog.Default().
	Logger *slog.Logger
}

// EraseOptions are the choices of one erasure.
type EraseOptions struct {
	// DryRun counts and lists, and changes nothing: no marker, no removal,
	// no leaf.
	DryRun bool
	// Stores limits the erasure to these stores (by name). Default: every
	// store. A name the config does not know is refused (ErrUnknownStore).
	Stores []string
}

// StoreReceipt is what an erasure removed from one store.
type StoreReceipt struct {
	// Store and Region name the store.
	Store  string `json:"store"`
	Region string `json:"region"`
	// Removed is how many rows were removed (in a dry run: would be).
	Removed int64 `json:"removed"`
	// Passes are the rows removed by each pass.
	Passes []int64 `json:"passes,omitempty"`
	// Remaining is how many rows of the user the store held after the last
	// pass (0 once erased; -1 when not checked).
	Remaining int64 `json:"remaining"`
	// Error says why the store could not be erased ("" when it was).
	Error string `json:"error,omitempty"`
}

// Receipt is the record of one erasure: what was removed where, counts, no
// payloads. The user appears only as its keyed hash.
type Receipt struct {
	// Subject is the keyed hash of the user id (hex), as in the audit leaves
	// and the erasure marker.
	Subject string `json:"subject"`
	// DryRun is true when nothing was changed.
	DryRun bool `json:"dry_run"`
	// Started and Finished bound the erasure.
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	// MarkedAt is when the erasure marker was recorded (zero in a dry run):
	// the sinks store none of the user's events that occurred before it.
	MarkedAt time.Time `json:"marked_at,omitzero"`
	// Stores are the stores, in config order.
	Stores []StoreReceipt `json:"stores"`
	// Removed is the total of rows removed.
	Removed int64 `json:"removed"`
	// Leaves is how many audit leaves were appended.
	Leaves int `json:"leaves"`
	// Topics are where the user's events still sit in Kafka (nil when not
	// searched).
	Topics []TopicHoldings `json:"topics,omitempty"`
	// Complete is true when every store was erased and checked empty.
	Complete bool `json:"complete"`
}

// Eraser removes users' data from every store.
type Eraser struct {
	cfg EraseConfig
	log *slog.Logger
}

// NewEraser checks cfg and returns an Eraser; errors wrap ErrConfig.
func NewEraser(cfg EraseConfig) (*Eraser, error) {
	var errs []error
	if cfg.Subjects == nil {
		errs = append(errs, fmt.Errorf("%w: erase: a pseudonymisation key (subjects) is required", ErrConfig))
	}
	if cfg.Markers == nil {
		errs = append(errs, fmt.Errorf("%w: erase: an erasure marker store is required", ErrConfig))
	}
	seen := map[string]bool{}
	for i, s := range cfg.Stores {
		switch {
		case s.Name == "":
			errs = append(errs, fmt.Errorf("%w: erase: store %d: name required", ErrConfig, i))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("%w: erase: store %q named twice", ErrConfig, s.Name))
		case s.Store == nil:
			errs = append(errs, fmt.Errorf("%w: erase: store %q: not opened", ErrConfig, s.Name))
		}
		seen[s.Name] = true
	}
	if cfg.Settle < 0 {
		errs = append(errs, fmt.Errorf("%w: erase: settle must not be negative", ErrConfig))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Actor == "" {
		cfg.Actor = "erase"
	}
	if cfg.Settle == 0 {
		cfg.Settle = DefaultSettle
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Eraser{cfg: cfg, log: log}, nil
}

// Erase removes userID's rows from every store (or opts.Stores) and
// returns the receipt.
//
// In order: it takes the erasure lock (Locker); records the erasure marker
// (from then on no sink stores an event of the user that occurred before
// it); erases every store (pass 1) and appends an erasure leaf per store;
// waits Settle, so that a batch a sink checked against the markers just
// before the marker was recorded has landed; erases again (pass 2, a leaf
// per store even when nothing was left: it explains any row a sink wrote in
// between); counts what is left (Remaining, 0 expected); and, with a
// Locator, lists where the user's events still sit in Kafka topics.
//
// A store that fails does not stop the others; the receipt says which
// failed and the error wraps ErrIncomplete. Erasure is idempotent: running
// it again finishes an interrupted one (a crash between a removal and its
// leaf leaves rows gone without a leaf until it is run again).
func (e *Eraser) Erase(ctx context.Context, userID string, opts EraseOptions) (*Receipt, error) {
	if userID == "" {
		return nil, ErrEmptyUser
	}
	stores, err := e.selected(opts.Stores)
	if err != nil {
		return nil, err
	}
	subject := e.cfg.Subjects.Subject([]byte(userID))
	r := &Receipt{Subject: subject.String(), DryRun: opts.DryRun, Started: e.cfg.Now().UTC()}
	for _, s := range stores {
		r.Stores = append(r.Stores, StoreReceipt{Store: s.Name, Region: s.Region, Remaining: -1})
	}
	if opts.DryRun {
		var errs []error
		for i, s := range stores {
			n, err := s.Store.Count(ctx, userID)
			if err != nil {
				r.Stores[i].Error = err.Error()
				errs = append(errs, fmt.Errorf("store %s: %w", s.Name, err))
				continue
			}
			r.Stores[i].Removed, r.Stores[i].Remaining = int64(n), int64(n)
			r.Removed += int64(n)
		}
		if err := e.locate(ctx, userID, r); err != nil {
			errs = append(errs, err)
		}
		r.Finished = e.cfg.Now().UTC()
		if len(errs) > 0 {
			return r, fmt.Errorf("%w: dry run: %w", ErrIncomplete, errors.Join(errs...))
		}
		return r, nil
	}

	if e.cfg.Locker != nil {
		held, release, err := e.cfg.Locker.Lock(ctx, LockName)
		if err != nil {
			return nil, fmt.Errorf("erasure: %w", err)
		}
		defer release()
		ctx = held
	}
	r.MarkedAt = e.cfg.Now().UTC()
	if err := e.cfg.Markers.Mark(ctx, subject, r.MarkedAt); err != nil {
		return nil, fmt.Errorf("erasure: record the erasure marker (nothing was erased): %w", err)
	}
	var errs []error
	pass := func(n int) {
		var leaves []audit.Leaf
		for i, s := range stores {
			removed, err := s.Store.Erase(ctx, userID)
			if err != nil {
				r.Stores[i].Error = err.Error()
				errs = append(errs, fmt.Errorf("store %s, pass %d: %w", s.Name, n, err))
				e.log.Warn("erase: a store failed", "store", s.Name, "pass", n, "error", err)
				continue
			}
			r.Stores[i].Passes = append(r.Stores[i].Passes, int64(removed))
			r.Stores[i].Removed += int64(removed)
			r.Removed += int64(removed)
			if removed > 0 || n > 1 {
				leaves = append(leaves, audit.Leaf{Kind: audit.KindErasure, Time: e.cfg.Now().UnixMilli(), Actor: e.cfg.Actor,
					Subject: subject, Decision: audit.Erased, Region: s.Region, Dest: audit.Destination{Store: s.Name}, Count: int64(removed)})
			}
		}
		if len(leaves) > 0 && e.cfg.Ledger != nil {
			if err := e.cfg.Ledger.Append(ctx, leaves); err != nil {
				errs = append(errs, fmt.Errorf("audit leaves of pass %d: %w", n, err))
				return
			}
			r.Leaves += len(leaves)
		}
	}
	pass(1)
	if len(errs) == 0 {
		select {
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
		case <-time.After(e.cfg.Settle):
			pass(2)
		}
	}
	if len(errs) == 0 {
		for i, s := range stores {
			n, err := s.Store.Count(ctx, userID)
			if err != nil {
				errs = append(errs, fmt.Errorf("store %s: check: %w", s.Name, err))
				continue
			}
			r.Stores[i].Remaining = int64(n)
			if n > 0 {
				errs = append(errs, fmt.Errorf("store %s: %d rows of the user are back after the second pass", s.Name, n))
			}
		}
	}
	if err := e.locate(ctx, userID, r); err != nil {
		errs = append(errs, err)
	}
	r.Finished = e.cfg.Now().UTC()
	if len(errs) > 0 {
		return r, fmt.Errorf("%w: erase: %w; run it again to finish", ErrIncomplete, errors.Join(errs...))
	}
	r.Complete = true
	return r, nil
}

func (e *Eraser) locate(ctx context.Context, userID string, r *Receipt) error {
	if e.cfg.Locator == nil {
		return nil
	}
	hs, err := e.cfg.Locator.Locate(ctx, userID)
	r.Topics = hs
	return err
}

// selected returns the stores named (every store when names is empty).
func (e *Eraser) selected(names []string) ([]StoreRef, error) {
	if len(names) == 0 {
		return e.cfg.Stores, nil
	}
	var out []StoreRef
	for _, n := range names {
		i := slices.IndexFunc(e.cfg.Stores, func(s StoreRef) bool { return s.Name == n })
		if i < 0 {
			known := make([]string, len(e.cfg.Stores))
			for j, s := range e.cfg.Stores {
				known[j] = s.Name
			}
			return nil, fmt.Errorf("%w: %q (the config has %v)", ErrUnknownStore, n, known)
		}
		out = append(out, e.cfg.Stores[i])
	}
	return out, nil
}
