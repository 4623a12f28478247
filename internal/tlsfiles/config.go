package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// Option adjusts ClientConfig and ServerConfig.
type Option func(*options)

type options struct {
	onReload func(error)
}

// OnReloadError sets a function called (from the handshake goroutine) when
// changed files fail to load and the previous certificate or CA stays in use.
// The error names the files, never their contents.
func OnReloadError(fn func(error)) Option { return func(o *options) { o.onReload = fn } }

func buildOptions(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// ClientConfig returns a client configuration for f. The files are read once
// here (so a missing file fails now, not at the first dial) and again
// whenever they change:
//
//   - CertFile/KeyFile: the client certificate, served from
//     GetClientCertificate, so a rotated certificate is used on the next
//     handshake.
//   - CAFile: the roots. tls.Config cannot swap RootCAs, so Go's own
//     verification is turned off (InsecureSkipVerify) and VerifyConnection
//     verifies the chain against the current pool and the name against
//     ServerName, or, when that is empty, the name the handshake was sent to
//     (the dialed host; a dialed IP address is not sent, so verification
//     fails with an error saying to set ServerName; see ForAddr).
//   - No CAFile: Go verifies against the system roots as usual.
//
// With InsecureSkipVerify nothing about the server is verified. The
// returned config is safe to Clone and to use for many connections.
func ClientConfig(f Files, opts ...Option) (*tls.Config, error) {
	o := buildOptions(opts)
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         f.ServerName,
		InsecureSkipVerify: f.InsecureSkipVerify,
	}
	if f.CertFile != "" || f.KeyFile != "" {
		if f.CertFile == "" || f.KeyFile == "" {
			return nil, errors.New("tls client: certFile and keyFile must be set together")
		}
		certs := &watched[*tls.Certificate]{
			paths:    []string{f.CertFile, f.KeyFile},
			load:     func() (*tls.Certificate, error) { c, err := loadPair(f.CertFile, f.KeyFile); return &c, err },
			onReload: o.onReload,
		}
		if _, err := certs.get(); err != nil {
			return nil, fmt.Errorf("tls client certificate: %w", err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := certs.get()
			if err != nil {
				return nil, fmt.Errorf("tls client certificate: %w", err)
			}
			return c, nil
		}
	}
	if f.CAFile != "" && !f.InsecureSkipVerify {
		pool := &watched[*x509.CertPool]{
			paths:    []string{f.CAFile},
			load:     func() (*x509.CertPool, error) { return loadPool(f.CAFile) },
			onReload: o.onReload,
		}
		if _, err := pool.get(); err != nil {
			return nil, fmt.Errorf("tls client CA: %w", err)
		}
		cfg.InsecureSkipVerify = true // verification happens in VerifyConnection
		serverName := f.ServerName
		caFile := f.CAFile
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			roots, err := pool.get()
			if err != nil {
				return fmt.Errorf("verify server certificate: %w", err)
			}
			name := serverName
			if name == "" {
				name = cs.ServerName
			}
			if name == "" {
				return errors.New("verify server certificate: no server name to verify " +
					"(dialed an IP address?): set serverName")
			}
			if err := verifyChain(cs.PeerCertificates, roots, name, x509.ExtKeyUsageServerAuth); err != nil {
				return fmt.Errorf("verify server certificate for %q against CA file %s: %w", name, caFile, err)
			}
			return nil
		}
	}
	return cfg, nil
}

// ServerConfig returns a server configuration serving f.CertFile/f.KeyFile
// through GetCertificate, re-read when the files change. With f.CAFile set,
// client certificates are verified against it (re-read when it changes) in
// VerifyConnection; requireClientCert makes a certificate mandatory, which
// needs a CAFile. Because the verification is done in VerifyConnection,
// ConnectionState.VerifiedChains stays empty: PeerCertificates[0] is the
// verified client certificate when the handshake succeeded.
//
// The returned config has no NextProtos; callers (http.Server does this
// itself) add their ALPN protocols to it or to a Clone.
func ServerConfig(f Files, requireClientCert bool, opts ...Option) (*tls.Config, error) {
	o := buildOptions(opts)
	if f.CertFile == "" || f.KeyFile == "" {
		return nil, errors.New("tls server: certFile and keyFile are required")
	}
	if requireClientCert && f.CAFile == "" {
		return nil, errors.New("tls server: requiring client certificates needs caFile")
	}
	certs := &watched[*tls.Certificate]{
		paths:    []string{f.CertFile, f.KeyFile},
		load:     func() (*tls.Certificate, error) { c, err := loadPair(f.CertFile, f.KeyFile); return &c, err },
		onReload: o.onReload,
	}
	if _, err := certs.get(); err != nil {
		return nil, fmt.Errorf("tls server certificate: %w", err)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := certs.get()
			if err != nil {
				return nil, fmt.Errorf("tls server certificate: %w", err)
			}
			return c, nil
		},
	}
	if f.CAFile == "" {
		return cfg, nil
	}
	pool := &watched[*x509.CertPool]{
		paths:    []string{f.CAFile},
		load:     func() (*x509.CertPool, error) { return loadPool(f.CAFile) },
		onReload: o.onReload,
	}
	if _, err := pool.get(); err != nil {
		return nil, fmt.Errorf("tls client CA: %w", err)
	}
	cfg.ClientAuth = tls.RequestClientCert
	if requireClientCert {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	caFile := f.CAFile
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			if requireClientCert {
				return errors.New("verify client certificate: none presented")
			}
			return nil
		}
		roots, err := pool.get()
		if err != nil {
			return fmt.Errorf("verify client certificate: %w", err)
		}
		if err := verifyChain(cs.PeerCertificates, roots, "", x509.ExtKeyUsageClientAuth); err != nil {
			return fmt.Errorf("verify client certificate %q against CA file %s: %w",
				cs.PeerCertificates[0].Subject.CommonName, caFile, err)
		}
		return nil
	}
	return cfg, nil
}

// verifyChain verifies peer[0] with peer[1:] as intermediates against roots,
// and its name against dnsName when that is set (an IP address is matched
// against the IP SANs).
func verifyChain(peer []*x509.Certificate, roots *x509.CertPool, dnsName string, usage x509.ExtKeyUsage) error {
	if len(peer) == 0 {
		return errors.New("no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range peer[1:] {
		inter.AddCert(c)
	}
	_, err := peer[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       dnsName,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	return err
}
