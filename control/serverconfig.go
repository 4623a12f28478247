package control

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/switchyard/switchyard/internal/tlsfiles"
)

// ServerConfig configures the API server. Field names in Validate's errors
// are those of the control plane's configuration file.
type ServerConfig struct {
	// Listen is the host:port for gRPC and REST.
	Listen string
	// Token, when set, is an operator token named "default" (the
	// configuration file's tokenFile or SWITCHYARD_CONTROL_TOKEN).
	Token string
	// Tokens are further named bearer tokens and their roles.
	Tokens []Token
	// ClientCertificates map verified client certificates to roles; they
	// need TLS.CAFile.
	ClientCertificates []ClientCertificate
	// ReadAuth: reads (List, Get, Watch) need a read-only or operator
	// credential too. Without it they are open to anyone who reaches the
	// port; credentials sent with a read are then not checked.
	ReadAuth bool
	// TLS, when CertFile and KeyFile are set, serves TLS only (gRPC and
	// REST, on the same port), re-reading the files when they change.
	// CAFile, when set, is the CA client certificates must chain to, and
	// a client certificate is required (mTLS) unless ClientCertOptional.
	// ServerName and InsecureSkipVerify are client settings and rejected.
	TLS tlsfiles.Files
	// ClientCertOptional lets clients without a certificate complete the
	// handshake (to authenticate with a token, or to read /healthz).
	ClientCertOptional bool
	// AllowPlaintextTokens lets a listener that is not on loopback accept
	// bearer tokens without TLS. Validate refuses that otherwise: a token
	// sent in the clear is anyone's who can read the network. Set it only
	// where something else encrypts the connection (a service mesh's mTLS).
	AllowPlaintextTokens bool
	// AllowOperatorSidecars lets sidecar streams authenticate with an
	// operator credential (such as the legacy tokenFile token) on a
	// listener that is not loopback. Without it they are refused
	// (PERMISSION_DENIED): a sidecar's credential sits in a Secret of its
	// application's namespace and in every sidecar, while an operator's
	// may start, abort and declare cutovers of every application. Give
	// sidecars sidecar tokens instead (Tokens with Role sidecar and Apps).
	// Set it only while upgrading an install whose sidecars still hold the
	// operator token; every such stream is then logged as a warning.
	AllowOperatorSidecars bool
	// AllowedHosts are further names REST callers may dial the control
	// plane by (the Host header), beyond IP addresses, "localhost", names
	// under ".localhost" and the host of Listen. Any other name is refused
	// as DNS rebinding (a web page that rebinds its name to the control
	// plane's address): list the names curl or other REST clients use,
	// e.g. the Service's. gRPC callers are not checked by name.
	AllowedHosts []string
	// AuditFile, when set, receives one JSON line per mutating call.
	// Mutating calls are logged through zap either way.
	AuditFile string
	// ShutdownTimeout bounds the graceful stop.
	ShutdownTimeout time.Duration
	// Limits bound what one credential or connection may hold of the
	// control plane; a zero field takes DefaultLimits' value.
	Limits Limits

	// keepaliveTime and keepaliveTimeout (10 s and 5 s when zero; tests
	// shorten them): a connection silent for keepaliveTime is pinged, and
	// closed when the answer takes longer than keepaliveTimeout.
	keepaliveTime, keepaliveTimeout time.Duration
}

// Limits bound what a caller may make the control plane hold, so that one
// sidecar credential — shared by the pods of a namespace, and readable by
// whoever reads its Secret — cannot exhaust its memory. Configuration keys
// are those of control.yaml's limits.
type Limits struct {
	// SidecarsPerCredential (sidecarsPerCredential) bounds the sidecar
	// streams one credential — a token, a clientCertificates entry, or
	// anonymous callers — may have open at once, and the sidecars the
	// registry remembers for it: when a new instance would exceed it, the
	// credential's sidecar disconnected longest ago is forgotten early. A
	// stream beyond it is refused with RESOURCE_EXHAUSTED.
	SidecarsPerCredential int
	// MessageBytes (messageBytes) bounds a gRPC message the control plane
	// receives: a sidecar's report (its status lists its virtual brokers,
	// about 100 bytes each), a request. Larger ones end the call with
	// RESOURCE_EXHAUSTED. REST bodies are bounded to 1 MiB apart from it.
	MessageBytes int
	// StreamsPerConnection (streamsPerConnection) is the HTTP/2
	// SETTINGS_MAX_CONCURRENT_STREAMS of every connection: the gRPC calls,
	// sidecar streams and REST requests one connection may have open at
	// once. A sidecar needs one.
	StreamsPerConnection int
}

// DefaultLimits returns the defaults: 256 sidecars per credential,
// messages of at most 256 KiB (the status of a sidecar in front of two
// clusters of 1,024 brokers each takes about 200 KiB), 100 streams per
// connection (the least HTTP/2 recommends). One credential then holds at
// most about 64 MiB of reports.
func DefaultLimits() Limits {
	return Limits{SidecarsPerCredential: 256, MessageBytes: 256 << 10, StreamsPerConnection: 100}
}

// orDefault fills the zero fields of l from DefaultLimits.
func (l Limits) orDefault() Limits {
	d := DefaultLimits()
	if l.SidecarsPerCredential == 0 {
		l.SidecarsPerCredential = d.SidecarsPerCredential
	}
	if l.MessageBytes == 0 {
		l.MessageBytes = d.MessageBytes
	}
	if l.StreamsPerConnection == 0 {
		l.StreamsPerConnection = d.StreamsPerConnection
	}
	return l
}

func (l Limits) validate() []error {
	var errs []error
	if l.SidecarsPerCredential < 0 {
		errs = append(errs, fmt.Errorf("limits.sidecarsPerCredential: %d must not be negative", l.SidecarsPerCredential))
	}
	// A sidecar's first message and a report of a small cluster fit in
	// 16 KiB; below it the limit would only break sidecars.
	if l.MessageBytes != 0 && (l.MessageBytes < 16<<10 || l.MessageBytes > 64<<20) {
		errs = append(errs, fmt.Errorf("limits.messageBytes: %d: want 16 KiB to 64 MiB", l.MessageBytes))
	}
	if l.StreamsPerConnection < 0 || l.StreamsPerConnection > 1<<20 {
		errs = append(errs, fmt.Errorf("limits.streamsPerConnection: %d: want 1 to 1048576", l.StreamsPerConnection))
	}
	return errs
}

// String describes the configuration without its tokens, so a config
// printed with %v or %+v (or %#v, through GoString) never shows them.
func (c ServerConfig) String() string {
	names := make([]string, 0, len(c.Tokens)+1)
	for _, t := range c.allTokens() {
		names = append(names, t.Name+"="+t.Role.String())
	}
	return fmt.Sprintf("{Listen:%s Tokens:%v ClientCertificates:%v ReadAuth:%t TLS:%+v ClientCertOptional:%t AllowPlaintextTokens:%t AllowOperatorSidecars:%t AllowedHosts:%v AuditFile:%s ShutdownTimeout:%v Limits:%+v}",
		c.Listen, names, c.ClientCertificates, c.ReadAuth, c.TLS, c.ClientCertOptional, c.AllowPlaintextTokens, c.AllowOperatorSidecars,
		c.AllowedHosts, c.AuditFile, c.ShutdownTimeout, c.Limits)
}

// GoString is String.
func (c ServerConfig) GoString() string { return c.String() }

// allTokens is Tokens with the legacy Token first.
func (c ServerConfig) allTokens() []Token {
	var out []Token
	if c.Token != "" {
		out = append(out, Token{Name: "default", Role: RoleOperator, Value: Secret(c.Token)})
	}
	return append(out, c.Tokens...)
}

// hasSidecarCredentials reports whether a token or client certificate
// entry has the sidecar role.
func (c ServerConfig) hasSidecarCredentials() bool {
	return slices.ContainsFunc(c.Tokens, func(t Token) bool { return t.Role == RoleSidecar }) ||
		slices.ContainsFunc(c.ClientCertificates, func(cc ClientCertificate) bool { return cc.Role == RoleSidecar })
}

// authEnabled reports whether any credential is configured.
func (c ServerConfig) authEnabled() bool {
	return c.Token != "" || len(c.Tokens) > 0 || c.TLS.CAFile != ""
}

// Validate checks the configuration, including that the TLS files load,
// and returns every problem found, each naming its field. Errors never
// contain a token or a key.
func (c ServerConfig) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	host, _, err := net.SplitHostPort(c.Listen)
	if err != nil {
		add("listen: %q: %w", c.Listen, err)
	}
	if c.TLS.Enabled() {
		if c.TLS.CertFile == "" && c.TLS.KeyFile == "" {
			add("tls.certFile, tls.keyFile: required to serve TLS")
		}
		if c.TLS.ServerName != "" {
			add("tls.serverName: a client setting; the server does not use it")
		}
		if c.TLS.InsecureSkipVerify {
			add("tls.insecureSkipVerify: a client setting; the server does not use it")
		}
		if err := c.TLS.Validate("tls"); err != nil {
			errs = append(errs, err)
		}
	}
	if c.ClientCertOptional && c.TLS.CAFile == "" {
		add("tls.clientCertOptional: needs tls.caFile")
	}

	seenName := map[string]int{}
	tokens := c.allTokens()
	offset := len(tokens) - len(c.Tokens) // the legacy token is not in c.Tokens
	for i, t := range tokens {
		field := "tokenFile"
		if i >= offset {
			field = fmt.Sprintf("tokens[%d]", i-offset)
		}
		switch {
		case t.Name == "":
			add("%s.name: required", field)
		case seenName[t.Name] > 0:
			add("%s.name: %q repeated", field, t.Name)
		}
		seenName[t.Name]++
		if t.Role < RoleSidecar || t.Role > RoleOperator {
			add("%s.role: want sidecar, read-only or operator", field)
		}
		if t.Value == "" {
			add("%s: empty token", field)
		}
		if err := checkApps(t.Role, t.Apps); err != nil {
			add("%s.apps: %w", field, err)
		}
		if err := checkInstances(t.Role, t.Instances); err != nil {
			add("%s.instances: %w", field, err)
		}
		for j := range i {
			if tokens[j].Value != "" && tokens[j].Value == t.Value {
				add("%s (%s): the same token as %s: each token must tell who is calling", field, t.Name, tokens[j].Name)
			}
		}
	}
	for i, cc := range c.ClientCertificates {
		if cc.Identity == "" || cc.Identity == "*" {
			add("clientCertificates[%d].identity: a URI, DNS name or common name (a trailing * matches a prefix, not everything)", i)
		}
		if cc.Role < RoleSidecar || cc.Role > RoleOperator {
			add("clientCertificates[%d].role: want sidecar, read-only or operator", i)
		}
		if err := checkApps(cc.Role, cc.Apps); err != nil {
			add("clientCertificates[%d].apps: %w", i, err)
		}
		if cc.BindInstance && cc.Role != RoleSidecar {
			add("clientCertificates[%d].bindInstance: only for role sidecar", i)
		}
	}
	if len(c.ClientCertificates) > 0 && c.TLS.CAFile == "" {
		add("clientCertificates: need tls.caFile to verify client certificates")
	}
	if err == nil && !c.authEnabled() && !isLoopback(host) {
		add("listen: %s is not a loopback address, and no tokens (tokenFile, tokens) or client CA (tls.caFile) "+
			"are configured: anyone who reaches the port could move clients between clusters", c.Listen)
	}
	if err == nil && len(tokens) > 0 && c.TLS.CertFile == "" && !isLoopback(host) && !c.AllowPlaintextTokens {
		add("tokenFile, tokens: listen %s is not a loopback address and serves no TLS (tls.certFile, tls.keyFile): "+
			"bearer tokens would cross the network in the clear; serve TLS, or set allowPlaintextTokens "+
			"where something else encrypts the connection (a service mesh)", c.Listen)
	}
	for i, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, ":/ \t") {
			add("allowedHosts[%d]: %q: want a host name, without port or scheme", i, h)
		}
	}
	if c.AuditFile != "" {
		if fi, err := os.Stat(filepath.Dir(c.AuditFile)); err != nil {
			add("auditFile: %w", err)
		} else if !fi.IsDir() {
			add("auditFile: %s is not a directory", filepath.Dir(c.AuditFile))
		}
	}
	if c.ShutdownTimeout < 0 {
		add("shutdownTimeout: %v must not be negative", c.ShutdownTimeout)
	}
	errs = append(errs, c.Limits.validate()...)
	return errors.Join(errs...)
}

// checkApps checks the apps of a credential with role: required for the
// sidecar role, which may only claim them, and refused for the others.
func checkApps(role Role, apps []string) error {
	if role != RoleSidecar {
		if len(apps) > 0 {
			return errors.New("only for role sidecar (an operator may connect as any application)")
		}
		return nil
	}
	if len(apps) == 0 {
		return errors.New("required for role sidecar: the applications its streams may claim")
	}
	for _, a := range apps {
		if a == "" || a == "*" {
			return fmt.Errorf("%q: an application name (a trailing * matches a prefix, not everything)", a)
		}
	}
	return nil
}

// checkInstances checks the instance patterns of a token: for role
// sidecar only, never empty or "*" alone.
func checkInstances(role Role, instances []string) error {
	if len(instances) > 0 && role != RoleSidecar {
		return errors.New("only for role sidecar")
	}
	for _, i := range instances {
		if i == "" || i == "*" {
			return fmt.Errorf("%q: an instance name (a trailing * matches a prefix, not everything)", i)
		}
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
