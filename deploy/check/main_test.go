package check

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if built.path != "" {
		// The build's temporary root: the binary is at <root>/out/residency.
		_ = os.RemoveAll(filepath.Dir(filepath.Dir(built.path)))
	}
	os.Exit(code)
}
