package rules

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func archived(n int64, content string) Archived {
	return Archived{Info: VersionInfo{Number: n, SHA256: Hash([]byte(content))}, Content: []byte(content)}
}

func TestCompareHistory(t *testing.T) {
	a1, a2, a3 := archived(1, "one"), archived(2, "two"), archived(3, "three")
	info := func(as ...Archived) []VersionInfo {
		var out []VersionInfo
		for _, a := range as {
			out = append(out, a.Info)
		}
		return out
	}
	for _, c := range []struct {
		name       string
		current    int64
		redis      []VersionInfo
		archive    []Archived
		missing    []int64
		unarchived []int64
		conflicts  []int64
		err        error
		msg        string
	}{
		{name: "in step", current: 3, redis: info(a1, a2, a3), archive: []Archived{a1, a2, a3}},
		{name: "nothing anywhere"},
		{name: "applied before the archive existed", current: 3, redis: info(a1, a2, a3), archive: []Archived{a3}, unarchived: []int64{1, 2}},
		{name: "Redis lost its data", archive: []Archived{a1, a2, a3}, missing: []int64{1, 2, 3},
			err: ErrHistoryLost, msg: "Redis lost ruleset history: Redis at 0, history at 3: run `residency rules restore`"},
		{name: "Redis lost a version", current: 3, redis: info(a1, a3), archive: []Archived{a1, a2, a3}, missing: []int64{2},
			err: ErrHistoryLost, msg: "Redis lacks version 2"},
		{name: "re-applied without the archive", current: 1, redis: info(archived(1, "uno")), archive: []Archived{a1, a2},
			missing: []int64{2}, conflicts: []int64{1}, err: ErrContentChanged, msg: "version 1 has other content in Redis"},
		{name: "a number with two contents archived, Redis holds the first", current: 1, redis: info(a1), archive: []Archived{a1, archived(1, "uno")}},
		{name: "a number with two contents archived, Redis holds the second", current: 1, redis: info(archived(1, "uno")), archive: []Archived{a1, archived(1, "uno")},
			conflicts: []int64{1}, err: ErrContentChanged},
		{name: "a number with two contents archived, Redis lost it", archive: []Archived{a1, archived(1, "uno")}, missing: []int64{1}, err: ErrHistoryLost},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := CompareHistory(c.current, c.redis, c.archive)
			if !slices.Equal(versionsOf(h.Missing), c.missing) && len(h.Missing)+len(c.missing) > 0 {
				t.Errorf("missing %v, want %v", versionsOf(h.Missing), c.missing)
			}
			if !slices.Equal(h.Unarchived, c.unarchived) {
				t.Errorf("unarchived %v, want %v", h.Unarchived, c.unarchived)
			}
			if !slices.Equal(h.Conflicts, c.conflicts) {
				t.Errorf("conflicts %v, want %v", h.Conflicts, c.conflicts)
			}
			err := h.Err()
			if c.err == nil && err != nil || c.err != nil && !errors.Is(err, c.err) || !strings.Contains(errString(err), c.msg) {
				t.Errorf("Err = %v, want %v with %q", err, c.err, c.msg)
			}
		})
	}
	if got := joinNumbers([]int64{3, 4, 5}); got != "3, 4 and 5" {
		t.Errorf("joinNumbers = %q", got)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
