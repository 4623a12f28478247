package admin

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/switchyard/switchyard/internal/tlsfiles"
)

// Config configures a Server. Start from DefaultConfig. Field names in
// Validate's errors are the ones below, in lower camel case.
type Config struct {
	// Listen is the host:port of the admin API (gRPC and REST, plus the
	// read-only endpoints). The default is loopback: the API can gate and
	// switch the proxy, so a non-loopback address needs Token or a client
	// CA (TLS.CAFile); Validate refuses it otherwise.
	Listen string
	// HealthListen, when set, is a second host:port that serves only
	// GET /healthz, /readyz and /metrics, without credentials: what kubelet
	// probes and Prometheus need, without the API that changes anything.
	// Empty: no such listener (the admin listener serves those paths too).
	HealthListen string
	// Token, when set, is a bearer token every ProxyAdminService call must
	// carry (authorization: Bearer <token>), over gRPC and REST alike.
	Token Secret
	// TLS, when CertFile and KeyFile are set, serves the admin listener
	// over TLS only (gRPC and REST), re-reading the files when they change.
	// CAFile, when set, verifies client certificates against it: a caller
	// with a verified certificate needs no token. With CAFile and no Token
	// the handshake requires a certificate (mTLS); with both, either
	// credential will do. ServerName and InsecureSkipVerify are client
	// settings and rejected.
	TLS tlsfiles.Files
	// AllowedHosts are further names the Host header (HTTP/2 :authority)
	// may carry on the admin listener, beyond IP addresses, "localhost",
	// names under ".localhost" and the host of Listen. Any other name is
	// refused, because it is what a DNS-rebinding web page sends: list the
	// names remote callers dial the admin API by.
	AllowedHosts []string
	// ShutdownTimeout bounds how long Serve waits, once its context is
	// cancelled, for in-flight calls (a draining Switch, say) to finish
	// before it closes the remaining connections.
	ShutdownTimeout time.Duration
}

// Secret is a credential held in memory. It prints as "[redacted]", in
// structs too, so a logged Config never shows it.
type Secret string

func (Secret) String() string   { return "[redacted]" }
func (Secret) GoString() string { return "[redacted]" }

// DefaultConfig returns the defaults: the admin API on 127.0.0.1:9190 with
// no credentials, no health listener, and 15 s for in-flight calls to
// finish at shutdown, longer than the proxy's default 10 s drain so a
// Switch in progress can still report its outcome.
func DefaultConfig() Config {
	return Config{
		Listen:          "127.0.0.1:9190",
		ShutdownTimeout: 15 * time.Second,
	}
}

// Authenticated reports whether callers of the API must present a
// credential (a token or a client certificate).
func (c Config) Authenticated() bool {
	return c.Token != "" || c.TLS.CAFile != ""
}

// Validate checks the configuration, including that the TLS files load, and
// returns every problem found, each naming its field. Errors never contain
// the token or a key.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	host, err := hostPort(c.Listen)
	if err != nil {
		add("listen: %w", err)
	} else if !c.Authenticated() && !IsLoopback(host) {
		add("listen: %s is not a loopback address, and neither a token nor a client CA (tls.caFile) is configured: "+
			"anyone who reaches the port could gate and switch this proxy", c.Listen)
	}
	if c.HealthListen != "" {
		if _, err := hostPort(c.HealthListen); err != nil {
			add("healthListen: %w", err)
		} else if c.HealthListen == c.Listen && !strings.HasSuffix(c.Listen, ":0") {
			add("healthListen: %s is also listen: give the health endpoints a port of their own", c.HealthListen)
		}
	}
	if err := c.TLS.ValidateServer("tls"); err != nil {
		errs = append(errs, err)
	}
	if strings.TrimSpace(string(c.Token)) != string(c.Token) {
		add("token: leading or trailing white space")
	}
	for i, h := range c.AllowedHosts {
		if h == "" || strings.ContainsAny(h, ":/ \t") {
			add("allowedHosts[%d]: %q: want a host name, without port or scheme", i, h)
		}
	}
	if c.ShutdownTimeout <= 0 {
		add("shutdownTimeout: %v must be positive", c.ShutdownTimeout)
	}
	return errors.Join(errs...)
}

// hostPort checks a host:port listen address and returns its host. An
// empty host (":9190") means every interface.
func hostPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("port %q out of range", port)
	}
	return host, nil
}

// IsLoopback reports whether host (of a listen address) reaches loopback
// interfaces only: "localhost" or an address in 127.0.0.0/8 or ::1. The
// empty host and 0.0.0.0 mean every interface and are not loopback.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
