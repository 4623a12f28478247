package saslserver

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Mechanism names.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// ErrAuthFailed is the answer to wrong credentials and unknown users alike
// (the client is not told which).
var ErrAuthFailed = errors.New("authentication failed: invalid credentials")

// scramIterations is what Kafka uses by default for SCRAM credentials.
const scramIterations = 4096

// Users is a local user list: name → credentials for each mechanism.
// Passwords are not kept: PLAIN checks a keyed digest of the password, SCRAM
// the derived keys (RFC 5802).
type Users struct {
	users map[string]*user
	// key is a random per-process secret. It keys the PLAIN password
	// digests and the credentials made up for unknown users (fakeScram),
	// so that what the server sends and how long it takes do not tell an
	// unknown user from a real one. Real users' salts are random per
	// process too (NewUsers), so both change at a restart and at no other
	// time.
	key []byte
	// compare compares two secrets of equal, fixed size;
	// subtle.ConstantTimeCompare outside tests, which watch what is
	// compared.
	compare func(a, b []byte) int
}

type user struct {
	plain []byte                // plainDigest of the password
	scram map[string]scramCreds // mechanism → derived keys
}

type scramCreds struct {
	salt      []byte
	storedKey []byte
	serverKey []byte
}

// usersFile is the YAML shape of a users file:
//
//	users:
//	  app: s3cret
//	  reporting: other
type usersFile struct {
	Users map[string]string `yaml:"users"`
}

// LoadUsers reads a users file. Errors name the file, never a password.
func LoadUsers(path string) (*Users, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f usersFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		// yaml errors quote line numbers, not values.
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(f.Users) == 0 {
		return nil, fmt.Errorf("%s: no users (want `users: {name: password}`)", path)
	}
	return NewUsers(f.Users)
}

// NewUsers builds a user list from name → password, deriving SCRAM keys
// with a random salt per user and mechanism.
func NewUsers(passwords map[string]string) (*Users, error) {
	u := &Users{users: map[string]*user{}, key: make([]byte, 32), compare: subtle.ConstantTimeCompare}
	rand.Read(u.key)
	names := make([]string, 0, len(passwords))
	for n := range passwords {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		pw := passwords[name]
		if name == "" || strings.ContainsAny(name, ",=") {
			return nil, fmt.Errorf("user %q: names must be non-empty and contain no ',' or '='", name)
		}
		if pw == "" {
			return nil, fmt.Errorf("user %q: empty password", name)
		}
		e := &user{plain: u.plainDigest([]byte(pw)), scram: map[string]scramCreds{}}
		for _, mech := range []string{ScramSHA256, ScramSHA512} {
			salt := make([]byte, saltLen)
			rand.Read(salt)
			h := hashFor(mech)
			salted, err := pbkdf2.Key(h, pw, salt, scramIterations, h().Size())
			if err != nil {
				return nil, fmt.Errorf("user %q: derive %s key: %w", name, mech, err)
			}
			clientKey := mac(h, salted, "Client Key")
			sum := h()
			sum.Write(clientKey)
			e.scram[mech] = scramCreds{salt: salt, storedKey: sum.Sum(nil), serverKey: mac(h, salted, "Server Key")}
		}
		u.users[name] = e
	}
	return u, nil
}

// saltLen is the size of real and made-up SCRAM salts.
const saltLen = 16

// plainDigest is what PLAIN compares: a keyed digest of fixed size, so
// that the comparison takes as long whatever the length of the password
// tried and of the real one.
func (u *Users) plainDigest(pw []byte) []byte {
	m := hmac.New(sha256.New, u.key)
	m.Write([]byte("plain\x00"))
	m.Write(pw)
	return m.Sum(nil)
}

// fakeScram makes up SCRAM credentials for a user that does not exist,
// derived from the user name with the per-process key: the same salt at
// every attempt, as a real user's is, and a stored key no proof matches
// (the caller also checks that the user exists).
func (u *Users) fakeScram(mech, name string) scramCreds {
	h := hashFor(mech)
	derive := func(label string) []byte {
		m := hmac.New(h, u.key)
		m.Write([]byte(label + "\x00" + mech + "\x00" + name))
		return m.Sum(nil)
	}
	return scramCreds{salt: derive("salt")[:saltLen], storedKey: derive("stored")}
}

// scramCreds returns the credentials of name for a SCRAM mechanism, made up
// (fakeScram) when the user does not exist; known reports whether it does.
// Both are computed either way, so the time taken does not tell.
func (u *Users) scramCreds(mech, name string) (creds scramCreds, known bool) {
	creds = u.fakeScram(mech, name)
	if e, ok := u.users[name]; ok {
		return e.scram[mech], true
	}
	return creds, false
}

func hashFor(mech string) func() hash.Hash {
	if mech == ScramSHA512 {
		return sha512.New
	}
	return sha256.New
}

func mac(h func() hash.Hash, key []byte, msg string) []byte {
	m := hmac.New(h, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// Supported reports whether mech is one this package serves.
func Supported(mech string) bool {
	return mech == Plain || mech == ScramSHA256 || mech == ScramSHA512
}

// Session is one authentication exchange.
type Session struct {
	users *Users
	mech  string
	step  int
	// SCRAM state.
	name            string
	clientFirstBare string
	serverFirst     string
	nonce           string
	gs2Header       string
	// User is the authenticated user once Done.
	User string
	Done bool
}

// Mechanism is the session's mechanism name.
func (s *Session) Mechanism() string { return s.mech }

// Start begins an exchange for mech (one of Supported).
func (u *Users) Start(mech string) (*Session, error) {
	if !Supported(mech) {
		return nil, fmt.Errorf("mechanism %q is not enabled", mech)
	}
	return &Session{users: u, mech: mech}, nil
}

// Step consumes the client's message and returns the server's reply. The
// exchange is over when s.Done is true (success) or Step returns an
// error (failure: ErrAuthFailed for bad credentials).
func (s *Session) Step(msg []byte) ([]byte, error) {
	defer func() { s.step++ }()
	switch s.mech {
	case Plain:
		return nil, s.plain(msg)
	default:
		switch s.step {
		case 0:
			return s.scramFirst(msg)
		case 1:
			return s.scramFinal(msg)
		}
	}
	return nil, errors.New("unexpected message after the exchange ended")
}

// plain checks "authzid NUL authcid NUL passwd". It compares fixed-size
// digests, and compares one for an unknown user too, so neither the
// password's length nor the user's existence shows in the time taken.
func (s *Session) plain(msg []byte) error {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return errors.New("malformed PLAIN message")
	}
	authz, name, pw := string(parts[0]), string(parts[1]), parts[2]
	if authz != "" && authz != name {
		return fmt.Errorf("PLAIN: authorization id %q differs from user %q", authz, name)
	}
	u := s.users
	// An unknown user's password is compared with a made-up digest, and
	// refused whatever the outcome: the work is the same.
	want := u.plainDigest([]byte("fake\x00" + name))
	e, known := u.users[name]
	if known {
		want = e.plain
	}
	if match := u.compare(want, u.plainDigest(pw)); !known || match != 1 {
		return ErrAuthFailed
	}
	s.User, s.Done = name, true
	return nil
}

// scramFirst takes client-first-message "gs2-header client-first-bare"
// and answers server-first-message "r=nonce,s=salt,i=iterations".
func (s *Session) scramFirst(msg []byte) ([]byte, error) {
	m := string(msg)
	// gs2-header: cbind-flag "," [authzid] ","
	i := strings.IndexByte(m, ',')
	if i < 0 || (m[0] != 'n' && m[0] != 'y') {
		return nil, errors.New("malformed SCRAM client-first message (channel binding is not supported)")
	}
	j := strings.IndexByte(m[i+1:], ',')
	if j < 0 {
		return nil, errors.New("malformed SCRAM client-first message")
	}
	s.gs2Header = m[:i+1+j+1]
	s.clientFirstBare = m[len(s.gs2Header):]
	attrs := parseAttrs(s.clientFirstBare)
	name, cnonce := unescapeName(attrs["n"]), attrs["r"]
	if name == "" || cnonce == "" {
		return nil, errors.New("malformed SCRAM client-first message: no user or nonce")
	}
	s.name = name
	// An unknown user gets a made-up salt, the same at every attempt, and
	// fails at the proof: the reply does not reveal which users exist.
	creds, _ := s.users.scramCreds(s.mech, name)
	salt := creds.salt
	snonce := make([]byte, 18)
	rand.Read(snonce)
	s.nonce = cnonce + base64.RawStdEncoding.EncodeToString(snonce)
	s.serverFirst = fmt.Sprintf("r=%s,s=%s,i=%d", s.nonce, base64.StdEncoding.EncodeToString(salt), scramIterations)
	return []byte(s.serverFirst), nil
}

// scramFinal checks client-final-message "c=...,r=...,p=proof" and answers
// server-final-message "v=signature".
func (s *Session) scramFinal(msg []byte) ([]byte, error) {
	m := string(msg)
	k := strings.LastIndex(m, ",p=")
	if k < 0 {
		return nil, errors.New("malformed SCRAM client-final message: no proof")
	}
	withoutProof := m[:k]
	attrs := parseAttrs(m)
	if attrs["r"] != s.nonce {
		return nil, errors.New("SCRAM nonce mismatch")
	}
	if attrs["c"] != base64.StdEncoding.EncodeToString([]byte(s.gs2Header)) {
		return nil, errors.New("SCRAM channel binding mismatch")
	}
	proof, err := base64.StdEncoding.DecodeString(attrs["p"])
	if err != nil {
		return nil, errors.New("malformed SCRAM proof")
	}
	// An unknown user's made-up credentials go through the same steps.
	creds, known := s.users.scramCreds(s.mech, s.name)
	h := hashFor(s.mech)
	authMessage := s.clientFirstBare + "," + s.serverFirst + "," + withoutProof
	sig := mac(h, creds.storedKey, authMessage)
	if len(proof) != len(sig) {
		return nil, ErrAuthFailed
	}
	clientKey := make([]byte, len(sig))
	for i := range sig {
		clientKey[i] = proof[i] ^ sig[i]
	}
	sum := h()
	sum.Write(clientKey)
	if match := s.users.compare(creds.storedKey, sum.Sum(nil)); !known || match != 1 {
		return nil, ErrAuthFailed
	}
	s.User, s.Done = s.name, true
	return []byte("v=" + base64.StdEncoding.EncodeToString(mac(h, creds.serverKey, authMessage))), nil
}

// parseAttrs splits "a=1,b=2" (values may contain '='; Kafka's extensions
// such as tokenauth=true are accepted and ignored).
func parseAttrs(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

// unescapeName undoes SCRAM's "=2C" and "=3D" escapes.
func unescapeName(n string) string {
	return strings.NewReplacer("=2C", ",", "=3D", "=").Replace(n)
}
