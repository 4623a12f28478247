package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestDemo(t *testing.T) {
	var out bytes.Buffer
	if err := Run(context.Background(), Config{RecordsPerPhase: 500}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	for _, want := range []string{"✓ done", "✓ release", "synced exactly", "0 lost, 0 duplicated, 0 out of order per key", "0 delivered twice", "never restarted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
