// Package buildtest builds the switchyard binary for tests that run it as
// a process of its own (the kill -9 suites).
package buildtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// Switchyard returns prebuilt when it is set (a -crashtest.bin flag, say),
// else builds ./cmd/switchyard of this module into the test's temporary
// directory and returns its path.
func Switchyard(t testing.TB, prebuilt string) string {
	t.Helper()
	if prebuilt != "" {
		t.Logf("switchyard binary %s (not built)", prebuilt)
		return prebuilt
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "switchyard")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/switchyard")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/switchyard in %s: %v\n%s", root, err, out)
	}
	return bin
}

var moduleLine = regexp.MustCompile(`(?m)^module\s+"?github\.com/switchyard/switchyard"?\s*$`)

// ModuleRoot walks up from the working directory to this module's go.mod.
func ModuleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && moduleLine.Match(b) {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("no go.mod of github.com/switchyard/switchyard above %s", wd)
		}
	}
}
