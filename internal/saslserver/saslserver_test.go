package saslserver

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// exchange runs franz-go's client mechanism against a server session.
func exchange(t *testing.T, users *Users, m sasl.Mechanism) (*Session, error) {
	t.Helper()
	srv, err := users.Start(m.Name())
	if err != nil {
		t.Fatal(err)
	}
	cs, msg, err := m.Authenticate(context.Background(), "127.0.0.1:9092")
	if err != nil {
		t.Fatal(err)
	}
	for done := false; !done; {
		reply, err := srv.Step(msg)
		if err != nil {
			return srv, err
		}
		if done, msg, err = cs.Challenge(reply); err != nil {
			return srv, err
		}
	}
	return srv, nil
}

func TestMechanismsAgainstFranzGoClients(t *testing.T) {
	users, err := NewUsers(map[string]string{"app": "s3cret-pw", "other": "x"})
	if err != nil {
		t.Fatal(err)
	}
	mechs := func(user, pw string) []sasl.Mechanism {
		return []sasl.Mechanism{
			plain.Auth{User: user, Pass: pw}.AsMechanism(),
			scram.Auth{User: user, Pass: pw}.AsSha256Mechanism(),
			scram.Auth{User: user, Pass: pw}.AsSha512Mechanism(),
		}
	}
	for _, m := range mechs("app", "s3cret-pw") {
		t.Run(m.Name()+"/good", func(t *testing.T) {
			s, err := exchange(t, users, m)
			if err != nil {
				t.Fatalf("authenticate: %v", err)
			}
			if !s.Done || s.User != "app" {
				t.Fatalf("done=%v user=%q, want app", s.Done, s.User)
			}
		})
	}
	for _, tc := range []struct{ name, user, pw string }{
		{"wrong-password", "app", "nope"},
		{"unknown-user", "ghost", "s3cret-pw"},
		{"other-users-password", "other", "s3cret-pw"},
	} {
		for _, m := range mechs(tc.user, tc.pw) {
			t.Run(m.Name()+"/"+tc.name, func(t *testing.T) {
				s, err := exchange(t, users, m)
				if !errors.Is(err, ErrAuthFailed) {
					t.Fatalf("err = %v, want ErrAuthFailed", err)
				}
				if s.Done || s.User != "" {
					t.Fatal("session authenticated after a failure")
				}
				if strings.Contains(err.Error(), tc.pw) {
					t.Fatalf("error %q contains the password", err)
				}
			})
		}
	}
}

func TestMalformedMessages(t *testing.T) {
	users, _ := NewUsers(map[string]string{"app": "pw"})
	for mech, msgs := range map[string][][]byte{
		Plain:       {nil, []byte("app"), []byte("x\x00app\x00pw")},
		ScramSHA256: {nil, []byte("p=tls-unique,,n=app,r=x"), []byte("n,,n=,r="), []byte("n,,garbage")},
	} {
		for _, msg := range msgs {
			s, _ := users.Start(mech)
			if _, err := s.Step(msg); err == nil {
				t.Errorf("%s %q: accepted", mech, msg)
			}
		}
	}
	s, _ := users.Start(ScramSHA512)
	if _, err := s.Step([]byte("n,,n=app,r=abc")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Step([]byte("c=biws,r=wrongnonce,p=AAAA")); err == nil {
		t.Error("wrong nonce accepted")
	}
	if _, err := users.Start("GSSAPI"); err == nil {
		t.Error("GSSAPI started")
	}
}

func TestLoadUsers(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "users.yaml")
	os.WriteFile(good, []byte("users:\n  app: pw1\n"), 0o600)
	if _, err := LoadUsers(good); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.yaml")
	os.WriteFile(empty, []byte("users: {}\n"), 0o600)
	if _, err := LoadUsers(empty); err == nil || !strings.Contains(err.Error(), "no users") {
		t.Errorf("empty file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("users:\n  app: \"\"\n"), 0o600)
	if _, err := LoadUsers(bad); err == nil || !strings.Contains(err.Error(), "empty password") {
		t.Errorf("empty password: %v", err)
	}
	if _, err := LoadUsers(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file loaded")
	}
}

// serverFirst sends a client-first message for name and returns the
// server's salt and iteration count.
func serverFirst(t *testing.T, users *Users, mech, name string) (salt, iterations string) {
	t.Helper()
	s, err := users.Start(mech)
	if err != nil {
		t.Fatal(err)
	}
	reply, err := s.Step([]byte("n,,n=" + name + ",r=client-nonce"))
	if err != nil {
		t.Fatalf("%s client-first for %s: %v", mech, name, err)
	}
	attrs := parseAttrs(string(reply))
	return attrs["s"], attrs["i"]
}

// TestUnknownUserScramFirstLooksReal: an unknown user's server-first
// message is indistinguishable from a real user's across attempts: the
// same salt every time (a random salt per attempt gave unknown users
// away with two client-first messages), of the same size, with the same
// iteration count; and each unknown user has its own, as real users do.
func TestUnknownUserScramFirstLooksReal(t *testing.T) {
	users, err := NewUsers(map[string]string{"app": "s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	for _, mech := range []string{ScramSHA256, ScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			realSalt, realIter := serverFirst(t, users, mech, "app")
			if again, _ := serverFirst(t, users, mech, "app"); again != realSalt {
				t.Fatalf("a real user's salt changed between attempts: %s, then %s", realSalt, again)
			}
			ghost, ghostIter := serverFirst(t, users, mech, "ghost")
			if again, _ := serverFirst(t, users, mech, "ghost"); again != ghost {
				t.Errorf("an unknown user's salt changed between attempts (%s, then %s): the user's absence shows", ghost, again)
			}
			if ghostIter != realIter {
				t.Errorf("iterations: unknown user %s, real user %s", ghostIter, realIter)
			}
			rs, _ := base64.StdEncoding.DecodeString(realSalt)
			gs, err := base64.StdEncoding.DecodeString(ghost)
			if err != nil || len(gs) != len(rs) {
				t.Errorf("unknown user's salt %q (%v): %d bytes, a real one has %d", ghost, err, len(gs), len(rs))
			}
			if other, _ := serverFirst(t, users, mech, "ghost2"); other == ghost {
				t.Error("two unknown users share a salt")
			}
		})
	}
}

// TestSecretComparisonsHideLength: each credential check compares two
// secrets of one fixed size, whatever the length of the password tried,
// and compares them for unknown users too, so the time taken tells
// neither the password's length nor whether the user exists.
func TestSecretComparisonsHideLength(t *testing.T) {
	users, err := NewUsers(map[string]string{"app": "s3cret-pw"})
	if err != nil {
		t.Fatal(err)
	}
	type call struct{ a, b int }
	var calls []call
	users.compare = func(a, b []byte) int {
		calls = append(calls, call{len(a), len(b)})
		return subtle.ConstantTimeCompare(a, b)
	}
	for _, tc := range []struct{ name, user, pw string }{
		{"short", "app", "x"},
		{"same-length", "app", "s3cret-px"},
		{"long", "app", strings.Repeat("p", 200)},
		{"unknown-user", "ghost", "s3cret-pw"},
		{"good", "app", "s3cret-pw"},
	} {
		for _, m := range []sasl.Mechanism{
			plain.Auth{User: tc.user, Pass: tc.pw}.AsMechanism(),
			scram.Auth{User: tc.user, Pass: tc.pw}.AsSha256Mechanism(),
			scram.Auth{User: tc.user, Pass: tc.pw}.AsSha512Mechanism(),
		} {
			t.Run(tc.name+"/"+m.Name(), func(t *testing.T) {
				calls = nil
				exchange(t, users, m)
				size := sha256.Size
				if m.Name() == ScramSHA512 {
					size = sha512.Size
				}
				if len(calls) != 1 || calls[0] != (call{size, size}) {
					t.Errorf("comparisons (sizes): %v, want one of two %d-byte secrets", calls, size)
				}
			})
		}
	}
}
