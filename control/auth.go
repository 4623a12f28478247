package control

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/apiguard"
)

// ctxMetadata is the incoming gRPC metadata of a call (for REST calls, the
// gateway puts the HTTP headers there).
type ctxMetadata = metadata.MD

func incoming(ctx context.Context) ctxMetadata {
	md, _ := metadata.FromIncomingContext(ctx)
	return md
}

// Role is what a caller may do.
type Role int

const (
	// RoleNone may do nothing that needs a role (a verified client
	// certificate that no ClientCertificate entry names).
	RoleNone Role = iota
	// RoleSidecar may only open SidecarService.Connect.
	RoleSidecar
	// RoleReadOnly may list, get and watch.
	RoleReadOnly
	// RoleOperator may also create and abort cutovers, and connect as a
	// sidecar (the single legacy token was used for both).
	RoleOperator
)

func (r Role) String() string {
	switch r {
	case RoleNone:
		return "none"
	case RoleSidecar:
		return "sidecar"
	case RoleReadOnly:
		return "read-only"
	case RoleOperator:
		return "operator"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole parses "sidecar", "read-only" or "operator".
func ParseRole(s string) (Role, error) {
	for _, r := range []Role{RoleSidecar, RoleReadOnly, RoleOperator} {
		if s == r.String() {
			return r, nil
		}
	}
	return RoleNone, fmt.Errorf("role %q: want sidecar, read-only or operator", s)
}

// permission is what a method needs.
type permission int

const (
	permRead permission = iota
	permOperate
	permConnect
)

func (p permission) roleNeeded() string {
	switch p {
	case permRead:
		return "read-only or operator"
	case permOperate:
		return "operator"
	default:
		return "sidecar or operator"
	}
}

func (r Role) allows(p permission) bool {
	switch p {
	case permRead:
		return r == RoleReadOnly || r == RoleOperator
	case permOperate:
		return r == RoleOperator
	case permConnect:
		return r == RoleSidecar || r == RoleOperator
	}
	return false
}

// Secret is a credential held in memory. It prints as "[redacted]" with
// %v and %s, in structs too, so a logged config never shows it.
type Secret string

func (Secret) String() string   { return "[redacted]" }
func (Secret) GoString() string { return "[redacted]" }

// Token is a named bearer token and the role it grants. The name is what
// logs and the audit log show; the value never is.
type Token struct {
	Name  string
	Role  Role
	Value Secret
	// Apps (role sidecar, required) are the applications a sidecar stream
	// with this token may claim to serve: names, or prefixes ending in
	// "*". A token is shared by an application's pods, so it cannot name
	// an instance; see ClientCertificate.BindInstance.
	Apps []string
	// Instances (role sidecar, optional) narrow the instances its streams
	// may claim: names, or prefixes ending in "*" — e.g. "shop/*" for a
	// token given to the sidecars of namespace shop, whose instances are
	// "namespace/pod". Empty: any instance of Apps.
	Instances []string
}

// ClientCertificate maps a verified client certificate to a role. Identity
// is compared with the certificate's URI SANs (spiffe://...), DNS SANs and
// subject common name, exactly, or as a prefix when it ends in "*".
type ClientCertificate struct {
	Identity string
	Role     Role
	// Apps (role sidecar, required) are the applications a sidecar stream
	// with the certificate may claim, as Token.Apps.
	Apps []string
	// BindInstance (role sidecar): the instance a stream claims must be
	// one of the certificate's names (a URI SAN, a DNS SAN or its common
	// name), so each sidecar's certificate proves its instance — e.g. a
	// per-pod certificate with the common name "namespace/pod", the
	// sidecar's default instance.
	BindInstance bool
}

func (c ClientCertificate) matches(name string) bool { return matchPattern(c.Identity, name) }

// matchPattern compares name with pattern exactly, or as a prefix when the
// pattern ends in "*".
func matchPattern(pattern, name string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "*"); ok {
		return strings.HasPrefix(name, prefix)
	}
	return name == pattern
}

// principal is who made a call, as logs and the audit log name it.
type principal struct {
	kind string // "token", "certificate" or "anonymous"
	name string // the token's name or the certificate identity
	role Role
	// apps (role sidecar) are the applications a sidecar stream may claim
	// (patterns, see matchPattern).
	apps []string
	// instances, when not nil (role sidecar, a certificate with
	// BindInstance), are the instances a sidecar stream may claim.
	instances []string
	// instancePatterns, when not empty (role sidecar, a token with
	// Instances), are patterns the instance a stream claims must match.
	instancePatterns []string
	// entry (kind "certificate") is the Identity of the
	// ClientCertificate entry that matched: every certificate it matches
	// is one credential for Limits.
	entry string
}

// credential names, for Limits, the credential p used: its token, the
// clientCertificates entry its certificate matched, or anonymous.
func (p principal) credential() string {
	if p.kind == "certificate" && p.entry != "" {
		return "certificates " + p.entry
	}
	return p.String()
}

// mayClaim checks that a sidecar stream opened by p may claim to be id. An
// operator (or anyone, with auth off) may claim any sidecar; a sidecar
// credential only its applications and, when bound, its instance. The
// error is PermissionDenied.
func (p principal) mayClaim(id *switchyardv1.SidecarIdentity) error {
	if p.role != RoleSidecar {
		return nil
	}
	if !slices.ContainsFunc(p.apps, func(a string) bool { return matchPattern(a, id.GetApp()) }) {
		return status.Errorf(codes.PermissionDenied, "%s may not claim application %q (it may claim %s)",
			p, id.GetApp(), strings.Join(p.apps, ", "))
	}
	if p.instances != nil && !slices.Contains(p.instances, id.GetInstance()) {
		return status.Errorf(codes.PermissionDenied, "%s may claim only an instance its certificate names (%s), not %q",
			p, strings.Join(p.instances, ", "), id.GetInstance())
	}
	if len(p.instancePatterns) > 0 && !slices.ContainsFunc(p.instancePatterns, func(i string) bool { return matchPattern(i, id.GetInstance()) }) {
		return status.Errorf(codes.PermissionDenied, "%s may not claim instance %q (it may claim %s)",
			p, id.GetInstance(), strings.Join(p.instancePatterns, ", "))
	}
	return nil
}

func (p principal) String() string {
	if p.kind == "anonymous" {
		return "anonymous"
	}
	return p.kind + " " + p.name
}

var anonymous = principal{kind: "anonymous"}

// authorizer decides who a caller is and whether it may make a call.
// With no token and no client CA configured, auth is off and every call is
// allowed (the control plane then listens on loopback only, see
// ServerConfig.Validate). It is read-only after construction and safe for
// concurrent use.
type authorizer struct {
	enabled  bool
	readAuth bool
	tokens   []Token
	// keys holds the tokens' values as digests (see apiguard.Tokens), in
	// the order of tokens.
	keys *apiguard.Tokens
	// certs is set only when the server verifies client certificates
	// against a CA, so an unverified certificate is never looked at.
	certs       []ClientCertificate
	verifyCerts bool
}

func newAuthorizer(cfg ServerConfig) *authorizer {
	a := &authorizer{readAuth: cfg.ReadAuth, tokens: cfg.allTokens(), verifyCerts: cfg.TLS.CAFile != ""}
	values := make([]string, len(a.tokens))
	for i, t := range a.tokens {
		values[i] = string(t.Value)
	}
	a.keys = apiguard.NewTokens(values...)
	if a.verifyCerts {
		a.certs = cfg.ClientCertificates
	}
	a.enabled = len(a.tokens) > 0 || a.verifyCerts
	return a
}

// authenticate names the caller: the bearer token when one is sent (a
// token that matches none is an error, even with a certificate), else the
// verified client certificate, else anonymous.
func (a *authorizer) authenticate(ctx context.Context) (principal, error) {
	if vals := incoming(ctx).Get("authorization"); len(vals) > 0 {
		got, ok := apiguard.Bearer(vals[0])
		if !ok {
			return anonymous, status.Error(codes.Unauthenticated, "invalid bearer token: want authorization: Bearer <token>")
		}
		// Timing tells neither which token matched nor any's length.
		match := a.keys.Match(got)
		if match < 0 {
			return anonymous, status.Error(codes.Unauthenticated, "invalid bearer token")
		}
		t := a.tokens[match]
		return principal{kind: "token", name: t.Name, role: t.Role, apps: t.Apps, instancePatterns: t.Instances}, nil
	}
	if cert := a.peerCertificate(ctx); cert != nil {
		return a.certPrincipal(cert), nil
	}
	return anonymous, nil
}

// peerCertificate is the client's verified certificate, or nil.
func (a *authorizer) peerCertificate(ctx context.Context) *x509.Certificate {
	if !a.verifyCerts {
		return nil
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return nil
	}
	// The handshake verified it against the client CA (tlsfiles'
	// VerifyConnection), or it would not have completed.
	return info.State.PeerCertificates[0]
}

// certPrincipal maps a certificate to the first ClientCertificate entry
// that matches one of its names.
func (a *authorizer) certPrincipal(cert *x509.Certificate) principal {
	var names []string
	for _, u := range cert.URIs {
		names = append(names, u.String())
	}
	names = append(names, cert.DNSNames...)
	if cert.Subject.CommonName != "" {
		names = append(names, cert.Subject.CommonName)
	}
	for _, c := range a.certs {
		for _, n := range names {
			if c.matches(n) {
				p := principal{kind: "certificate", name: n, role: c.Role, apps: c.Apps, entry: c.Identity}
				if c.BindInstance {
					p.instances = names
				}
				return p
			}
		}
	}
	name := "(no name)"
	if len(names) > 0 {
		name = names[0]
	}
	return principal{kind: "certificate", name: name, role: RoleNone}
}

// authorize checks that the caller may call method, which needs perm. It
// returns the caller (for the audit log) and, when refused, an
// Unauthenticated error (no or bad credentials) or a PermissionDenied one
// naming the role needed. Reads need no credentials unless ReadAuth is set.
func (a *authorizer) authorize(ctx context.Context, method string, perm permission) (principal, error) {
	if !a.enabled {
		return anonymous, nil
	}
	p, err := a.authenticate(ctx)
	if perm == permRead && !a.readAuth {
		return p, nil
	}
	if err != nil {
		return p, err
	}
	if p.kind == "anonymous" {
		return p, status.Errorf(codes.Unauthenticated,
			"%s needs credentials: a bearer token (authorization: Bearer <token>)%s", method, a.certHint())
	}
	if !p.role.allows(perm) {
		return p, status.Errorf(codes.PermissionDenied, "%s needs role %s; %s has role %s", method, perm.roleNeeded(), p, p.role)
	}
	return p, nil
}

func (a *authorizer) certHint() string {
	if a.verifyCerts {
		return " or a client certificate"
	}
	return ""
}
