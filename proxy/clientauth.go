package proxy

// Client authentication: SaslHandshake v0-1, SaslAuthenticate v0-2.
//
// The proxy treats its clients' SASL in one of three ways (ClientAuth.Mode):
//
//   - passthrough (the default when no cluster has SASL configured): the
//     client's SaslHandshake and SaslAuthenticate go to the cluster, so the
//     client authenticates there with its own credentials. The cluster's
//     sasl settings, if any, then serve only the proxy's own requests
//     (metadata, API versions); client connections get the cluster's TLS
//     but not its SASL. A switch cannot
//     carry that session over — the new cluster has never seen the client
//     authenticate, and a SCRAM exchange cannot be replayed — so the first
//     request after a switch closes such a connection; the client
//     reconnects and authenticates to the new cluster. Its credentials
//     must therefore be valid on both clusters.
//   - terminate: the proxy answers the handshake itself, checking PLAIN or
//     SCRAM credentials against a local users file, and authenticates
//     upstream with each cluster's own settings. A connection that sends
//     anything but ApiVersions and SASL requests before authenticating is
//     closed, as a broker would, and so is one that sends a frame over
//     MaxPreAuthFrameBytes before authenticating. Failed authentications
//     are answered after FailedAuthDelay and limited per client address
//     (authlimit.go). Switches are invisible to the client.
//   - none (the default when a cluster has SASL configured): clients talk
//     plaintext; a client that tries SASL anyway is told no mechanism is
//     enabled (the proxy cannot authenticate one connection twice).

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"

	"github.com/switchyard/switchyard/internal/saslserver"
	"github.com/switchyard/switchyard/internal/tlsfiles"
)

const (
	keySaslHandshake    int16 = 17
	keySaslAuthenticate int16 = 36
)

// Client authentication modes.
const (
	ClientAuthPassthrough = "passthrough"
	ClientAuthTerminate   = "terminate"
	ClientAuthNone        = "none"
)

// ClientAuth configures the client side of the proxy.
type ClientAuth struct {
	// Mode is passthrough, terminate or none (see above); empty picks
	// passthrough, or none when any cluster has SASL configured.
	Mode string `yaml:"mode"`
	// Mechanisms offered when terminating (default PLAIN, SCRAM-SHA-256,
	// SCRAM-SHA-512).
	Mechanisms []string `yaml:"mechanisms"`
	// UsersFile holds the local users when terminating:
	// `users: {name: password}`. Read at start.
	UsersFile string `yaml:"usersFile"`
	// TLS, when its certFile and keyFile are set, serves the client
	// listeners over TLS (for deployments where clients are not on
	// loopback); a caFile then requires client certificates signed by it.
	TLS tlsfiles.Files `yaml:"tls"`

	// The settings below apply to mode terminate, where the proxy sees
	// its clients authenticate; DefaultConfig sets them.

	// MaxPreAuthFrameBytes bounds every frame a client sends before its
	// authentication succeeds (ApiVersions, SaslHandshake,
	// SaslAuthenticate included); a larger one closes the connection
	// (connection_errors_total{reason="preauth_frame_too_large"}). Kafka's
	// sasl.server.max.receive.size, 512 KiB. Afterwards maxFrameBytes
	// applies.
	MaxPreAuthFrameBytes int32 `yaml:"maxPreAuthFrameBytes"`
	// FailedAuthDelay is how long the proxy waits after a failed
	// authentication before it answers and closes the connection, reading
	// nothing from it meanwhile (Kafka's
	// connection.failed.authentication.delay.ms, 100 ms); 0 answers at
	// once.
	FailedAuthDelay time.Duration `yaml:"failedAuthDelay"`
	// MaxFailedAuths bounds the failed authentications from one client
	// address (IPv4 address or IPv6 /64) within FailedAuthWindow, counted
	// from its first attempt: beyond it, that address's attempts are
	// refused without checking credentials until the window ends
	// (client_authentication_throttled_total). 0: no limit.
	MaxFailedAuths   int           `yaml:"maxFailedAuths"`
	FailedAuthWindow time.Duration `yaml:"failedAuthWindow"`
}

// validate checks c against the clusters and fills in the defaults.
func (c *ClientAuth) validate(clusters []ClusterConfig) error {
	upstreamSASL := ""
	for _, cl := range clusters {
		if cl.SASL.Mechanism != "" {
			upstreamSASL = cl.Name
			break
		}
	}
	if c.Mode == "" {
		c.Mode = ClientAuthPassthrough
		if upstreamSASL != "" {
			c.Mode = ClientAuthNone
		}
	}
	switch c.Mode {
	case ClientAuthPassthrough, ClientAuthNone:
	case ClientAuthTerminate:
		if c.UsersFile == "" {
			return errors.New("clientAuth.usersFile: required with mode terminate")
		}
		if _, err := saslserver.LoadUsers(c.UsersFile); err != nil {
			return fmt.Errorf("clientAuth.usersFile: %w", err)
		}
		if len(c.Mechanisms) == 0 {
			c.Mechanisms = []string{saslserver.Plain, saslserver.ScramSHA256, saslserver.ScramSHA512}
		}
		for i, m := range c.Mechanisms {
			c.Mechanisms[i] = strings.ToUpper(m)
			if !saslserver.Supported(c.Mechanisms[i]) {
				return fmt.Errorf("clientAuth.mechanisms[%d]: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512", i, m)
			}
		}
		if c.MaxPreAuthFrameBytes < 1024 {
			return fmt.Errorf("clientAuth.maxPreAuthFrameBytes: %d is below the 1024-byte minimum", c.MaxPreAuthFrameBytes)
		}
		if c.FailedAuthDelay < 0 {
			return fmt.Errorf("clientAuth.failedAuthDelay: %v must not be negative", c.FailedAuthDelay)
		}
		if c.MaxFailedAuths < 0 {
			return fmt.Errorf("clientAuth.maxFailedAuths: %d must not be negative", c.MaxFailedAuths)
		}
		if c.MaxFailedAuths > 0 && c.FailedAuthWindow <= 0 {
			return fmt.Errorf("clientAuth.failedAuthWindow: %v must be positive when maxFailedAuths is set", c.FailedAuthWindow)
		}
	default:
		return fmt.Errorf("clientAuth.mode: %q is not one of passthrough, terminate, none", c.Mode)
	}
	if c.Mode != ClientAuthTerminate && (c.UsersFile != "" || len(c.Mechanisms) > 0) {
		return fmt.Errorf("clientAuth: usersFile and mechanisms apply to mode terminate only (mode is %s)", c.Mode)
	}
	if c.TLS.Enabled() {
		if c.TLS.CertFile == "" || c.TLS.KeyFile == "" {
			return errors.New("clientAuth.tls: certFile and keyFile are required to serve TLS")
		}
		if c.TLS.ServerName != "" || c.TLS.InsecureSkipVerify {
			return errors.New("clientAuth.tls: serverName and insecureSkipVerify are client-side settings")
		}
		if err := c.TLS.Validate("clientAuth.tls"); err != nil {
			return err
		}
	}
	return nil
}

// clientSASL is a connection's authentication state. Owned by the reader.
type clientSASL struct {
	passedThrough bool // passthrough: the client authenticated upstream
	session       *saslserver.Session
	user          string // terminate: authenticated user
}

// handleClientAuth deals with SASL requests and, when terminating, with
// requests sent before authenticating. handled means a response (or a
// fault) was arranged and the request must not be forwarded.
func (c *clientConn) handleClientAuth(ctx context.Context, hdr requestHeader, body []byte) (handled bool, err error) {
	sasl := hdr.Key == keySaslHandshake || hdr.Key == keySaslAuthenticate
	switch c.p.cfg.ClientAuth.Mode {
	case ClientAuthPassthrough:
		if sasl {
			c.auth.passedThrough = true
		}
		return false, nil
	case ClientAuthNone:
		if !sasl {
			return false, nil
		}
		if hdr.Key == keySaslHandshake {
			c.log.Warn("client attempted SASL, but the proxy authenticates to the cluster itself (clientAuth.mode none); configure the client without SASL, or clientAuth.mode terminate")
		}
		return true, c.enqueue(ctx, &pendingReq{hdr: hdr, local: saslError(hdr, kerr.UnsupportedSaslMechanism, nil,
			"this proxy does not accept client SASL (clientAuth.mode none)")})
	}
	// Terminate.
	if !sasl {
		if c.auth.user != "" || hdr.Key == keyApiVersions {
			return false, nil
		}
		return true, fault("unauthenticated", fmt.Errorf("%s request before SASL authentication", apiName(hdr.Key)))
	}
	if hdr.Key == keySaslHandshake {
		req := kmsg.NewPtrSASLHandshakeRequest()
		if err := decodeRequest(req, hdr, body); err != nil {
			return true, fault("bad_request", err)
		}
		mechs := c.p.cfg.ClientAuth.Mechanisms
		switch {
		case c.auth.user != "":
			// KIP-368 re-authentication is not offered (sessions have no
			// lifetime), so a second handshake is a client error.
			return true, c.failAuth(ctx, hdr, kerr.IllegalSaslState, mechs, "already authenticated")
		case hdr.Version == 0:
			return true, c.failAuth(ctx, hdr, kerr.UnsupportedVersion, mechs,
				"SaslHandshake v0 (raw SASL tokens) is not supported; use a client from Kafka 1.0 or later")
		case !slices.Contains(mechs, req.Mechanism):
			return true, c.failAuth(ctx, hdr, kerr.UnsupportedSaslMechanism, mechs,
				fmt.Sprintf("mechanism %q is not enabled", req.Mechanism))
		}
		c.auth.session, _ = c.p.clientUsers.Start(req.Mechanism)
		return true, c.enqueue(ctx, &pendingReq{hdr: hdr, local: saslError(hdr, nil, mechs, "")})
	}
	req := kmsg.NewPtrSASLAuthenticateRequest()
	if err := decodeRequest(req, hdr, body); err != nil {
		return true, fault("bad_request", err)
	}
	s := c.auth.session
	if s == nil || s.Done {
		return true, c.failAuth(ctx, hdr, kerr.IllegalSaslState, nil, "SaslAuthenticate without a SaslHandshake")
	}
	end, retryIn, ok := c.p.authLimit.begin(sourceOf(c.nc.RemoteAddr()))
	if !ok {
		c.p.m.authThrottled.Inc()
		c.log.Warn("client authentication refused without checking credentials: too many failures from this address (clientAuth.maxFailedAuths)",
			zap.Int("maxFailedAuths", c.p.cfg.ClientAuth.MaxFailedAuths), zap.Duration("failedAuthWindow", c.p.cfg.ClientAuth.FailedAuthWindow),
			zap.Duration("retryIn", retryIn))
		return true, c.failAuth(ctx, hdr, kerr.SaslAuthenticationFailed, nil,
			fmt.Sprintf("too many failed authentications from this address; retry in %v", retryIn.Round(time.Second)))
	}
	reply, err := s.Step(req.SASLAuthBytes)
	end(err != nil)
	if err != nil {
		c.p.m.clientAuthFails.Inc()
		c.log.Warn("client authentication failed", zap.String("mechanism", c.auth.mechanism()), zap.Error(err))
		msg := err.Error()
		if errors.Is(err, saslserver.ErrAuthFailed) {
			msg = "Authentication failed: invalid credentials with SASL mechanism " + c.auth.mechanism()
		}
		return true, c.failAuth(ctx, hdr, kerr.SaslAuthenticationFailed, nil, msg)
	}
	if s.Done {
		c.auth.user = s.User
		c.log = c.log.With(zap.String("user", s.User))
		c.log.Debug("client authenticated")
	}
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.Version = hdr.Version
	resp.SASLAuthBytes = reply
	return true, c.enqueue(ctx, &pendingReq{hdr: hdr, local: responseFrame(hdr.Key, hdr.Version, hdr.CorrID, resp.AppendTo(nil))})
}

// preAuth reports whether the connection is one whose client must still
// authenticate to the proxy (mode terminate). Reader only.
func (c *clientConn) preAuth() bool {
	return c.p.cfg.ClientAuth.Mode == ClientAuthTerminate && c.auth.user == ""
}

// frameLimit is the size of the largest request frame the reader takes
// next: clientAuth.maxPreAuthFrameBytes until the client has
// authenticated, as on a broker (sasl.server.max.receive.size), then
// maxFrameBytes. In passthrough mode the proxy cannot tell when a client
// has authenticated, so maxFrameBytes applies throughout and the broker
// bounds what reaches it. Reader only.
func (c *clientConn) frameLimit() int32 {
	if c.preAuth() {
		return min(c.p.cfg.ClientAuth.MaxPreAuthFrameBytes, c.p.cfg.MaxFrameBytes)
	}
	return c.p.cfg.MaxFrameBytes
}

func (a *clientSASL) mechanism() string {
	if a.session == nil {
		return ""
	}
	return a.session.Mechanism()
}

// failAuth answers with an error and closes the connection once the answer
// is written, as a broker does after a failed authentication. Like a
// broker (connection.failed.authentication.delay.ms), it first waits
// clientAuth.failedAuthDelay, reading nothing from the client meanwhile,
// so that one connection guesses at one attempt per delay rather than at
// line rate. It returns once the connection ends, or ctx does.
func (c *clientConn) failAuth(ctx context.Context, hdr requestHeader, code *kerr.Error, mechs []string, msg string) error {
	if err := sleepCtx(ctx, c.p.cfg.ClientAuth.FailedAuthDelay); err != nil {
		return errClientGone
	}
	if err := c.enqueue(ctx, &pendingReq{hdr: hdr, local: saslError(hdr, code, mechs, msg), closeAfter: true}); err != nil {
		return err
	}
	<-ctx.Done() // the writer ends the connection after the answer
	return errClientGone
}

// saslError builds a SaslHandshake or SaslAuthenticate response with code
// (nil: success) and, for the handshake, the enabled mechanisms.
func saslError(hdr requestHeader, code *kerr.Error, mechs []string, msg string) []byte {
	var ec int16
	if code != nil {
		ec = code.Code
	}
	var body []byte
	if hdr.Key == keySaslHandshake {
		r := kmsg.NewPtrSASLHandshakeResponse()
		r.Version, r.ErrorCode, r.SupportedMechanisms = hdr.Version, ec, mechs
		body = r.AppendTo(nil)
	} else {
		r := kmsg.NewPtrSASLAuthenticateResponse()
		r.Version, r.ErrorCode = hdr.Version, ec
		if msg != "" {
			r.ErrorMessage = &msg
		}
		body = r.AppendTo(nil)
	}
	return responseFrame(hdr.Key, hdr.Version, hdr.CorrID, body)
}

// setupClientAuth loads what the client side needs: the users file
// (terminate) and the listeners' TLS configuration.
func (p *Proxy) setupClientAuth() error {
	ca := p.cfg.ClientAuth
	if ca.Mode == ClientAuthTerminate {
		users, err := saslserver.LoadUsers(ca.UsersFile)
		if err != nil {
			return fmt.Errorf("clientAuth.usersFile: %w", err)
		}
		p.clientUsers = users
		p.authLimit = newAuthLimiter(ca.MaxFailedAuths, ca.FailedAuthWindow)
	}
	if ca.TLS.Enabled() {
		cfg, err := tlsfiles.ServerConfig(ca.TLS, ca.TLS.CAFile != "", tlsfiles.OnReloadError(func(err error) {
			p.log.Warn("client TLS files changed but cannot be loaded; keeping the previous ones", zap.Error(err))
		}))
		if err != nil {
			return fmt.Errorf("clientAuth.tls: %w", err)
		}
		p.clientTLS = cfg
	}
	return nil
}

// listen opens a client listener (bootstrap or virtual broker), with TLS
// when configured.
func (p *Proxy) listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	if p.clientTLS != nil {
		ln = tls.NewListener(ln, p.clientTLS)
	}
	return ln, nil
}
