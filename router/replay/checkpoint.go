package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"
)

// Checkpoint is a replay's saved progress.
type Checkpoint struct {
	// Plan is the replay's plan; a resume must match it.
	Plan Plan `json:"plan"`
	// Next is, per partition, the next offset to read.
	Next map[int]int64 `json:"next"`
	// KeptFrom is, per partition, the offset of the first event read that
	// the replay left where it was (still unplaceable in quarantine, still
	// undecodable in dead-letter, left out by a filter, refused by the loop
	// guard, or already replayed by an earlier replay): no copy of it was
	// written, so the topic it sits in still holds its only copy. Every
	// event read below it was moved elsewhere: `residency purge` may
	// delete up to it once the replay is complete. A partition absent kept
	// nothing. Nil in checkpoints written before this field existed
	// (unknown: a purge then frees nothing of a replay that kept events).
	KeptFrom map[int]int64 `json:"kept_from"`
	// Report is the cumulative report so far.
	Report Report `json:"report"`
	// Updated is when the checkpoint was saved.
	Updated time.Time `json:"updated"`
}

// Checkpoints keeps replay checkpoints by replay id.
type Checkpoints interface {
	// Load returns the checkpoint of replay id, or an error wrapping
	// ErrNoCheckpoint.
	Load(ctx context.Context, id string) (*Checkpoint, error)
	// Save stores cp under cp.Plan.ID, atomically replacing the previous
	// one.
	Save(ctx context.Context, cp *Checkpoint) error
	// List returns every checkpoint kept, of every replay, in any order;
	// checkpoints that cannot be read are left out. A replay reads them to
	// skip what an earlier replay already replayed under the same ruleset
	// version (see Plan.covers).
	List(ctx context.Context) ([]*Checkpoint, error)
}

// differs names the first field in which p and q differ, or "".
func (p *Plan) differs(q *Plan) string {
	switch {
	case p.Source != q.Source:
		return "source"
	case p.Topic != q.Topic:
		return "topic"
	case !slices.Equal(p.Ranges, q.Ranges):
		return "offset range"
	case p.RulesetVersion != q.RulesetVersion:
		return "ruleset version (" + p.RulesetVersion + ")"
	case p.RulesetHash != q.RulesetHash:
		return "ruleset content"
	case !slices.Equal(p.Filter.Jurisdictions, q.Filter.Jurisdictions) || !slices.Equal(p.Filter.Reasons, q.Filter.Reasons) ||
		!slices.Equal(p.Filter.EventTypes, q.Filter.EventTypes):
		return "filter"
	case p.MaxReplays != q.MaxReplays:
		return "loop limit"
	case p.Baseline != q.Baseline:
		return "baseline (" + p.Baseline + ")"
	case p.OnlyMoved != q.OnlyMoved:
		return "--only-moved"
	case p.Again != q.Again:
		return "--again"
	}
	return ""
}

// covers reports whether p, a replay that ran earlier, wrote everything q
// would write from the offsets p read: it read the same topic as the same
// source and decided under the same ruleset version (and content), with no
// filter or q's, writing every event or (with OnlyMoved) what q's baseline
// would move, with a loop limit at least q's. Replaying those offsets again
// under q would write the same events to the same places again.
func (p *Plan) covers(q *Plan) bool {
	emptyFilter := len(p.Filter.Jurisdictions)+len(p.Filter.Reasons)+len(p.Filter.EventTypes) == 0
	sameFilter := slices.Equal(p.Filter.Jurisdictions, q.Filter.Jurisdictions) && slices.Equal(p.Filter.Reasons, q.Filter.Reasons) &&
		slices.Equal(p.Filter.EventTypes, q.Filter.EventTypes)
	return p.ID != q.ID && p.Topic == q.Topic && p.Source == q.Source && p.RulesetVersion == q.RulesetVersion &&
		p.RulesetHash == q.RulesetHash && (emptyFilter || sameFilter) && p.MaxReplays >= q.MaxReplays &&
		(!p.OnlyMoved || (q.OnlyMoved && p.Baseline == q.Baseline))
}

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidID reports whether id can name a replay: letters, digits, '.', '_'
// and '-', at most 128 characters.
func ValidID(id string) bool { return validID.MatchString(id) }

// FileCheckpoints keeps checkpoints as JSON files DIR/ID.json, replaced
// atomically (write, sync, rename) on every Save.
type FileCheckpoints struct {
	dir string
}

// NewFileCheckpoints keeps checkpoints in dir, created if missing.
func NewFileCheckpoints(dir string) (*FileCheckpoints, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("replay: checkpoint directory: %w", err)
	}
	return &FileCheckpoints{dir: dir}, nil
}

// Path returns the file of replay id.
func (s *FileCheckpoints) Path(id string) string { return filepath.Join(s.dir, id+".json") }

// List implements Checkpoints: every DIR/*.json that reads as a
// checkpoint.
func (s *FileCheckpoints) List(_ context.Context) ([]*Checkpoint, error) {
	files, err := filepath.Glob(filepath.Join(s.dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("replay: list checkpoints: %w", err)
	}
	var out []*Checkpoint
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var cp Checkpoint
		if json.Unmarshal(b, &cp) == nil && cp.Plan.ID != "" {
			out = append(out, &cp)
		}
	}
	return out, nil
}

// Load implements Checkpoints.
func (s *FileCheckpoints) Load(_ context.Context, id string) (*Checkpoint, error) {
	b, err := os.ReadFile(s.Path(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoCheckpoint, id)
	}
	if err != nil {
		return nil, fmt.Errorf("replay: load checkpoint: %w", err)
	}
	var cp Checkpoint
	if err := json.Unmarshal(b, &cp); err != nil {
		return nil, fmt.Errorf("replay: checkpoint %s is corrupt: %w", s.Path(id), err)
	}
	return &cp, nil
}

// Save implements Checkpoints.
func (s *FileCheckpoints) Save(_ context.Context, cp *Checkpoint) error {
	b, err := json.MarshalIndent(cp, "", "  ")
	if err != nil {
		return fmt.Errorf("replay: encode checkpoint: %w", err)
	}
	f, err := os.CreateTemp(s.dir, cp.Plan.ID+".*.tmp")
	if err != nil {
		return fmt.Errorf("replay: save checkpoint: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replay: save checkpoint: %w", err)
	}
	if err := os.Rename(tmp, s.Path(cp.Plan.ID)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("replay: save checkpoint: %w", err)
	}
	return nil
}
