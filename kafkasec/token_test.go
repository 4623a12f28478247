package kafkasec

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func testJWT(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"exp":`+strconv.FormatInt(exp.Unix(), 10)+`}`)) + ".sig"
}

// TestTokenFileIsReadEveryTime: a rotated token file is used at the next
// authentication.
func TestTokenFileIsReadEveryTime(t *testing.T) {
	f := filepath.Join(t.TempDir(), "token")
	os.WriteFile(f, []byte("first\n"), 0o600)
	ts := &tokenSource{file: f}
	if got, err := ts.token(context.Background()); err != nil || got != "first" {
		t.Fatalf("token = %q, %v", got, err)
	}
	os.WriteFile(f, []byte("second\n"), 0o600)
	if got, _ := ts.token(context.Background()); got != "second" {
		t.Fatalf("after rotation token = %q", got)
	}
	os.WriteFile(f, nil, 0o600)
	if _, err := ts.token(context.Background()); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty file: %v", err)
	}
}

// TestTokenCommandCachedUntilExpiry: the command runs once, again a
// minute before the JWT's exp, and again after the refresh period for
// tokens without one; its failure is a clear error.
func TestTokenCommandCachedUntilExpiry(t *testing.T) {
	dir := t.TempDir()
	counter := filepath.Join(dir, "runs")
	out := filepath.Join(dir, "out")
	script := filepath.Join(dir, "token.sh")
	os.WriteFile(script, []byte("#!/bin/sh\necho x >> "+counter+"\ncat "+out+"\n"), 0o700)
	runs := func() int {
		b, _ := os.ReadFile(counter)
		return strings.Count(string(b), "x")
	}
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tok := testJWT(now.Add(10 * time.Minute))
	os.WriteFile(out, []byte(tok+"\n"), 0o600)
	ts := &tokenSource{command: []string{script}, refresh: time.Hour, now: clock}
	for i := 0; i < 3; i++ {
		got, err := ts.token(context.Background())
		if err != nil || got != tok {
			t.Fatalf("token = %q, %v", got, err)
		}
	}
	if runs() != 1 {
		t.Fatalf("command ran %d times, want 1 (cached)", runs())
	}
	now = now.Add(9*time.Minute + time.Second) // within a minute of exp
	ts.token(context.Background())
	if runs() != 2 {
		t.Fatalf("command ran %d times, want 2 (renewed before exp)", runs())
	}

	os.WriteFile(out, []byte("opaque-token\n"), 0o600)
	ts = &tokenSource{command: []string{script}, refresh: 5 * time.Minute, now: clock}
	ts.token(context.Background())
	now = now.Add(4 * time.Minute)
	ts.token(context.Background())
	if runs() != 3 {
		t.Fatalf("command ran %d times, want 3", runs())
	}
	now = now.Add(2 * time.Minute)
	ts.token(context.Background())
	if runs() != 4 {
		t.Fatalf("command ran %d times, want 4 (refresh period passed)", runs())
	}

	bad := &tokenSource{command: []string{filepath.Join(dir, "missing")}, refresh: time.Minute}
	if _, err := bad.token(context.Background()); err == nil || !strings.Contains(err.Error(), "oauth token command") {
		t.Fatalf("missing command: %v", err)
	}
	failing := filepath.Join(dir, "fail.sh")
	os.WriteFile(failing, []byte("#!/bin/sh\necho 'token endpoint unreachable' >&2\nexit 3\n"), 0o700)
	bad = &tokenSource{command: []string{failing}, refresh: time.Minute}
	if _, err := bad.token(context.Background()); err == nil || !strings.Contains(err.Error(), "token endpoint unreachable") {
		t.Fatalf("failing command: %v", err)
	}
}

func TestScrubHidesSecrets(t *testing.T) {
	err := scrub(os.ErrNotExist, "hunter2")
	if err != os.ErrNotExist {
		t.Fatalf("scrub changed an error without secrets: %v", err)
	}
	err = scrub(errString("bad password hunter2"), "hunter2")
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("scrub kept the secret: %v", err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
