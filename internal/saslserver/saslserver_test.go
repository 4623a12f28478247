package saslserver

import (
	"context"
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
