package saslserver

import (
	"testing"
)

// FuzzSessions feeds arbitrary client messages to every mechanism: an
// exchange may fail, but never panic, and never authenticate without the
// password.
func FuzzSessions(f *testing.F) {
	users, err := NewUsers(map[string]string{"app": "pw-fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(0, []byte("\x00app\x00pw-fuzz"), []byte(nil))
	f.Add(1, []byte("n,,n=app,r=abc"), []byte("c=biws,r=abcXYZ,p=AAAA"))
	f.Add(2, []byte("n,a=app,n=app,r=x"), []byte("c=,r=,p="))
	f.Add(1, []byte("y,,n==2C=3D,r=\xff"), []byte(",p=,,,"))
	mechs := []string{Plain, ScramSHA256, ScramSHA512}
	f.Fuzz(func(t *testing.T, m int, first, second []byte) {
		mech := mechs[(m%3+3)%3]
		s, _ := users.Start(mech)
		if _, err := s.Step(first); err != nil {
			return
		}
		if s.Done && string(first) != "\x00app\x00pw-fuzz" && string(first) != "app\x00app\x00pw-fuzz" {
			t.Fatalf("%s authenticated with %q", mech, first)
		}
		if _, err := s.Step(second); err == nil && s.Done && mech != Plain {
			t.Fatalf("%s authenticated with a forged proof %q / %q", mech, first, second)
		}
	})
}
