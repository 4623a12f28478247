package controlclient

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/switchyard/switchyard/internal/identity"
	"github.com/switchyard/switchyard/internal/tlsfiles"
)

// Config configures a Client. Start from DefaultConfig.
type Config struct {
	// Address is the control plane's gRPC address, host:port (a DNS name
	// is re-resolved on reconnect).
	Address string
	// App is the application the sidecar serves; cutovers select by it.
	App string
	// Instance identifies this sidecar within App, e.g. the pod name.
	Instance string
	// Labels are further selectors, e.g. {"role": "producer"}.
	Labels map[string]string
	// Token, when set, is sent as "authorization: Bearer <Token>" on the
	// stream. Validate refuses to send it without TLS unless Address is
	// loopback ("localhost" or a loopback IP) or AllowPlaintextToken is set.
	Token string
	// AllowPlaintextToken lets Token go without TLS to an Address that is
	// not loopback, where something else encrypts the connection (a
	// service mesh's mTLS). Without it, anyone who can read the network
	// between sidecar and control plane could take the token.
	AllowPlaintextToken bool
	// TLS, when enabled (any field set), connects with TLS: CAFile is the
	// CA the control plane's certificate must chain to (empty: the system
	// roots), CertFile and KeyFile a client certificate for mTLS, which the
	// control plane can map to the sidecar role instead of a token. The
	// files are re-read when they change. ServerName defaults to the host
	// of Address.
	TLS tlsfiles.Files
	// StatusInterval is how often the status is reported when nothing
	// else prompts a report.
	StatusInterval time.Duration
	// StartupWait bounds how long Ready waits, from Run's start, for the
	// first desired state to be applied; after it Ready reports ready with
	// the proxy's configured state (fail static). Zero: ready at once.
	StartupWait time.Duration
	// MinBackoff and MaxBackoff bound the delay between attempts to
	// reconnect, and between retries of a desired state that failed to
	// apply for a reason that may pass (an unreachable cluster, say).
	// The delay doubles from MinBackoff up to MaxBackoff, with jitter.
	MinBackoff, MaxBackoff time.Duration
}

// DefaultConfig returns the defaults: a status report every second, 10 s of
// startup wait, reconnects backing off from 100 ms to 5 s.
func DefaultConfig() Config {
	return Config{
		StatusInterval: time.Second,
		StartupWait:    10 * time.Second,
		MinBackoff:     100 * time.Millisecond,
		MaxBackoff:     5 * time.Second,
	}
}

// Validate reports the first invalid field, by name.
func (c Config) Validate() error {
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil {
		return fmt.Errorf("address: want host:port: %w", err)
	}
	if host == "" {
		return fmt.Errorf("address: %q: empty host", c.Address)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("address: %q: bad port", c.Address)
	}
	if c.App == "" {
		return errors.New("app: required")
	}
	if err := identity.CheckName(c.App); err != nil {
		return fmt.Errorf("app: %w", err)
	}
	if c.Instance == "" {
		return errors.New("instance: required")
	}
	if err := identity.CheckName(c.Instance); err != nil {
		return fmt.Errorf("instance: %w", err)
	}
	if err := identity.CheckLabels(c.Labels); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	if c.TLS.Enabled() {
		if err := c.TLS.Validate("tls"); err != nil {
			return err
		}
	}
	if c.Token != "" && !c.TLS.Enabled() && !loopback(host) && !c.AllowPlaintextToken {
		return fmt.Errorf("token: not sent in the clear to %s, which is not a loopback address: turn TLS on (tls), "+
			"or set allowPlaintextToken where something else encrypts the connection (a service mesh)", c.Address)
	}
	if c.StatusInterval <= 0 {
		return fmt.Errorf("statusInterval: %v must be positive", c.StatusInterval)
	}
	if c.StartupWait < 0 {
		return fmt.Errorf("startupWait: %v must not be negative", c.StartupWait)
	}
	if c.MinBackoff <= 0 {
		return fmt.Errorf("minBackoff: %v must be positive", c.MinBackoff)
	}
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("maxBackoff: %v is below minBackoff %v", c.MaxBackoff, c.MinBackoff)
	}
	return nil
}

// loopback reports whether host is "localhost" or a loopback IP address:
// a token sent there does not cross the network. A DNS name that resolves
// to loopback does not count (what it resolves to may change).
func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
