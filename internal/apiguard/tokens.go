package apiguard

import (
	"crypto/sha256"
	"crypto/subtle"
	"strings"
)

// Tokens is a set of bearer tokens, kept as SHA-256 digests. It is
// read-only after construction and safe for concurrent use.
type Tokens struct {
	digests [][sha256.Size]byte
	// compare is subtle.ConstantTimeCompare; tests replace it to see what
	// is compared.
	compare func(a, b []byte) int
}

// NewTokens keeps the digests of values, in order.
func NewTokens(values ...string) *Tokens {
	t := &Tokens{compare: subtle.ConstantTimeCompare}
	for _, v := range values {
		t.digests = append(t.digests, sha256.Sum256([]byte(v)))
	}
	return t
}

// Len is the number of tokens.
func (t *Tokens) Len() int { return len(t.digests) }

// Match returns the index of the token got is, or -1. It compares the
// digest of got with every token's, so the time it takes tells neither
// which token (or whether an early one) matched, nor the length of got or
// of any token.
func (t *Tokens) Match(got string) int {
	match := -1
	tried := sha256.Sum256([]byte(got))
	for i := range t.digests {
		if t.compare(tried[:], t.digests[i][:]) == 1 && match < 0 {
			match = i
		}
	}
	return match
}

// Bearer returns the token of an Authorization header value
// "Bearer <token>", and whether it has that form.
func Bearer(authorization string) (string, bool) {
	return strings.CutPrefix(authorization, "Bearer ")
}
