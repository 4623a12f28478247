package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Files names the PEM files of one TLS endpoint. The zero value means TLS is
// off.
//
// On the client side CAFile holds the roots the server's certificate must
// chain to (empty: the system roots), CertFile and KeyFile the client
// certificate offered when the server asks for one. On the server side
// CertFile and KeyFile are the serving certificate and CAFile the roots client
// certificates must chain to.
type Files struct {
	CAFile   string `yaml:"caFile" json:"caFile,omitempty"`
	CertFile string `yaml:"certFile" json:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile" json:"keyFile,omitempty"`
	// ServerName is the name the server's certificate is verified against
	// (client side only). Empty means the dialed host name; a dialed IP
	// address is not sent in the handshake, so when dialing by IP with a
	// CAFile set, fill it in with ForAddr.
	ServerName string `yaml:"serverName" json:"serverName,omitempty"`
	// InsecureSkipVerify turns off all verification of the server's
	// certificate, chain and name alike (client side only).
	InsecureSkipVerify bool `yaml:"insecureSkipVerify" json:"insecureSkipVerify,omitempty"`
}

// Enabled reports whether any field is set, that is whether the endpoint
// should use TLS at all. A Files with only ServerName or InsecureSkipVerify
// set is enabled and verifies against the system roots.
func (f Files) Enabled() bool {
	return f.CAFile != "" || f.CertFile != "" || f.KeyFile != "" || f.ServerName != "" || f.InsecureSkipVerify
}

// ForAddr returns f with ServerName set to the host of addr ("host:port" or a
// bare host) when ServerName is empty. Use it when dialing one known address,
// in particular an IP address, whose name the handshake does not carry.
func (f Files) ForAddr(addr string) Files {
	if f.ServerName != "" {
		return f
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	f.ServerName = host
	return f
}

// Validate checks that the files exist and parse: the CA file holds at least
// one certificate, the certificate and key files hold a matching pair, and the
// certificate has not expired. Errors name the field, prefixed with field
// ("control.tls" gives "control.tls.certFile: open ...: no such file or
// directory"), or, when field is a flag prefix starting with "-", the flags
// field+"-ca", "-cert" and "-key" ("--upstream-tls" gives
// "--upstream-tls-cert: ..."). Errors never contain file contents.
func (f Files) Validate(field string) error {
	name := func(sub string) string { return fieldName(field, sub) }
	var errs []error
	switch {
	case f.CertFile != "" && f.KeyFile == "":
		errs = append(errs, fmt.Errorf("%s: must be set when %s is", name("keyFile"), name("certFile")))
	case f.KeyFile != "" && f.CertFile == "":
		errs = append(errs, fmt.Errorf("%s: must be set when %s is", name("certFile"), name("keyFile")))
	case f.CertFile != "":
		cert, err := loadPair(f.CertFile, f.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name(pairField(err)), err))
		} else if now := time.Now(); now.After(cert.Leaf.NotAfter) {
			errs = append(errs, fmt.Errorf("%s: certificate %s expired at %s",
				name("certFile"), f.CertFile, cert.Leaf.NotAfter.UTC().Format(time.RFC3339)))
		}
	}
	if f.CAFile != "" {
		if _, err := loadPool(f.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name("caFile"), err))
		}
	}
	return errors.Join(errs...)
}

// ValidateServer is Validate for the files a server is given: once any
// field is set, CertFile and KeyFile are required (a server cannot verify
// client certificates against CAFile without serving TLS), and ServerName
// and InsecureSkipVerify, client settings, are refused. Errors are named as
// Validate's ("--admin-tls" gives "--admin-tls-cert, --admin-tls-key: ...").
func (f Files) ValidateServer(field string) error {
	if !f.Enabled() {
		return nil
	}
	name := func(sub string) string { return fieldName(field, sub) }
	var errs []error
	if f.CertFile == "" && f.KeyFile == "" {
		errs = append(errs, fmt.Errorf("%s, %s: required to serve TLS (client certificates are verified in the TLS handshake)",
			name("certFile"), name("keyFile")))
	}
	if f.ServerName != "" {
		errs = append(errs, fmt.Errorf("%s: a client setting; the server does not use it", name("serverName")))
	}
	if f.InsecureSkipVerify {
		errs = append(errs, fmt.Errorf("%s: a client setting; the server does not use it", name("insecureSkipVerify")))
	}
	if err := f.Validate(field); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fieldName names sub, a field of Files, below field: "tls" gives
// "tls.certFile", a flag prefix "--x-tls" gives "--x-tls-cert", "" gives
// "certFile".
func fieldName(field, sub string) string {
	flagNames := map[string]string{"caFile": "ca", "certFile": "cert", "keyFile": "key",
		"serverName": "server-name", "insecureSkipVerify": "insecure-skip-verify"}
	switch {
	case field == "":
		return sub
	case strings.HasPrefix(field, "-"):
		return field + "-" + flagNames[sub]
	}
	return field + "." + sub
}

// pairError marks which of the two files a loadPair error is about.
type pairError struct {
	key bool
	err error
}

func (e *pairError) Error() string { return e.err.Error() }
func (e *pairError) Unwrap() error { return e.err }

func pairField(err error) string {
	var pe *pairError
	if errors.As(err, &pe) && pe.key {
		return "keyFile"
	}
	return "certFile"
}

// loadPair reads and parses a certificate and its key. Errors name the files,
// never their contents (crypto/tls's parse errors do not quote input).
func loadPair(certFile, keyFile string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return tls.Certificate{}, &pairError{err: err}
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return tls.Certificate{}, &pairError{key: true, err: err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, &pairError{err: fmt.Errorf("load key pair %s, %s: %w", certFile, keyFile, err)}
	}
	// Go 1.23+ fills Leaf; parse anyway so older behaviour cannot leave it nil.
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return tls.Certificate{}, &pairError{err: fmt.Errorf("parse certificate %s: %w", certFile, err)}
		}
		cert.Leaf = leaf
	}
	return cert, nil
}

// loadPool reads a PEM bundle of CA certificates.
func loadPool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificates in %s", caFile)
	}
	return pool, nil
}
