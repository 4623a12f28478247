package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/switchyard/switchyard/mirror"
)

// TestMirrorUsageSampleLoads: the configuration file shown in `switchyard
// mirror --help` loads and validates as written.
func TestMirrorUsageSampleLoads(t *testing.T) {
	_, rest, ok := strings.Cut(mirrorUsage, "The configuration file:\n")
	sample, _, ok2 := strings.Cut(rest, "\nThe status endpoint")
	if !ok || !ok2 {
		t.Fatal("no configuration sample in the usage text")
	}
	var lines []string
	for _, l := range strings.Split(sample, "\n") {
		lines = append(lines, strings.TrimPrefix(l, "  "))
	}
	path := filepath.Join(t.TempDir(), "mirror.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadMirrorConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Gaps.Default != mirror.GapStop || !slices.Equal(cfg.Gaps.Continue, []string{".*-repartition"}) {
		t.Errorf("gaps: %+v", cfg.Gaps)
	}
}
