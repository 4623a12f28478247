package tlsfiles_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
)

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    tlsfiles.Files
		want bool
	}{
		{"zero", tlsfiles.Files{}, false},
		{"ca", tlsfiles.Files{CAFile: "ca.pem"}, true},
		{"pair", tlsfiles.Files{CertFile: "c", KeyFile: "k"}, true},
		{"server name only", tlsfiles.Files{ServerName: "kafka"}, true},
		{"insecure only", tlsfiles.Files{InsecureSkipVerify: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.f.Enabled(); got != tc.want {
				t.Fatalf("Enabled() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestForAddr(t *testing.T) {
	for _, tc := range []struct {
		name, server, addr, want string
	}{
		{"host port", "", "127.0.0.1:9180", "127.0.0.1"},
		{"ipv6", "", "[::1]:9180", "::1"},
		{"bare host", "", "control.svc", "control.svc"},
		{"explicit wins", "control", "127.0.0.1:9180", "control"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tlsfiles.Files{ServerName: tc.server}.ForAddr(tc.addr).ServerName
			if got != tc.want {
				t.Fatalf("ServerName = %q, want %q", got, tc.want)
			}
		})
	}
}

// filesCase is a Files to validate, the field prefix its errors are named
// with, and what the error must say.
type filesCase struct {
	name  string
	f     tlsfiles.Files
	field string
	want  []string // substrings of the error; nil means no error
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	good := tlstest.Write(t, dir, ca, ca.Localhost(t))
	other := ca.Localhost(t)
	otherKey := filepath.Join(dir, "other-key.pem")
	tlstest.Replace(t, otherKey, other.KeyPEM)
	expired := ca.Issue(t, tlstest.Leaf{CommonName: "old", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	expiredCert := filepath.Join(dir, "expired-cert.pem")
	expiredKey := filepath.Join(dir, "expired-key.pem")
	tlstest.Replace(t, expiredCert, expired.CertPEM)
	tlstest.Replace(t, expiredKey, expired.KeyPEM)
	garbage := filepath.Join(dir, "garbage.pem")
	tlstest.Replace(t, garbage, []byte("not a certificate"))
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []filesCase{
		{"zero", tlsfiles.Files{}, "tls", nil},
		{"good", tlsfiles.Files{CAFile: good.CA, CertFile: good.Cert, KeyFile: good.Key}, "tls", nil},
		{"ca only", tlsfiles.Files{CAFile: good.CA}, "tls", nil},
		{"missing cert", tlsfiles.Files{CertFile: missing, KeyFile: good.Key}, "control.tls",
			[]string{"control.tls.certFile: open " + missing, "no such file"}},
		{"missing key", tlsfiles.Files{CertFile: good.Cert, KeyFile: missing}, "control.tls",
			[]string{"control.tls.keyFile: open " + missing}},
		{"missing ca", tlsfiles.Files{CAFile: missing}, "tls", []string{"tls.caFile: open " + missing}},
		{"ca not pem", tlsfiles.Files{CAFile: garbage}, "tls", []string{"tls.caFile: no PEM certificates in " + garbage}},
		{"key of another cert", tlsfiles.Files{CertFile: good.Cert, KeyFile: otherKey}, "tls",
			[]string{"tls.certFile: load key pair", "private key does not match public key"}},
		{"cert without key", tlsfiles.Files{CertFile: good.Cert}, "tls", []string{"tls.keyFile: must be set when tls.certFile is"}},
		{"key without cert", tlsfiles.Files{KeyFile: good.Key}, "tls", []string{"tls.certFile: must be set when tls.keyFile is"}},
		{"expired", tlsfiles.Files{CertFile: expiredCert, KeyFile: expiredKey}, "tls", []string{"tls.certFile: certificate " + expiredCert + " expired at"}},
		{"no prefix", tlsfiles.Files{CAFile: missing}, "", []string{"caFile: open"}},
		{"flag prefix", tlsfiles.Files{CAFile: missing, CertFile: good.Cert, KeyFile: otherKey}, "--control-tls",
			[]string{"--control-tls-ca: open " + missing, "--control-tls-cert: load key pair"}},
		{"flag prefix key", tlsfiles.Files{CertFile: good.Cert, KeyFile: missing}, "--control-tls",
			[]string{"--control-tls-key: open " + missing}},
		{"two errors", tlsfiles.Files{CAFile: missing, CertFile: missing, KeyFile: good.Key}, "tls",
			[]string{"tls.caFile:", "tls.certFile:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f.Validate(tc.field)
			if wantError(t, "Validate", err, tc.want) {
				assertNoSecret(t, err.Error(), good, other, expired)
			}
		})
	}
}

// TestValidateServer: a server's files need a certificate and key once any
// is set, and refuse the client settings, with the fields named.
func TestValidateServer(t *testing.T) {
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	good := tlstest.Write(t, dir, ca, ca.Localhost(t))
	for _, tc := range []filesCase{
		{"zero", tlsfiles.Files{}, "tls", nil},
		{"pair", tlsfiles.Files{CertFile: good.Cert, KeyFile: good.Key}, "tls", nil},
		{"pair and client CA", tlsfiles.Files{CAFile: good.CA, CertFile: good.Cert, KeyFile: good.Key}, "tls", nil},
		{"client CA alone", tlsfiles.Files{CAFile: good.CA}, "tls", []string{"tls.certFile, tls.keyFile: required to serve TLS"}},
		{"flag names", tlsfiles.Files{CAFile: good.CA}, "--admin-tls", []string{"--admin-tls-cert, --admin-tls-key: required to serve TLS"}},
		{"server name", tlsfiles.Files{CertFile: good.Cert, KeyFile: good.Key, ServerName: "x"}, "tls", []string{"tls.serverName: a client setting"}},
		{"insecure", tlsfiles.Files{CertFile: good.Cert, KeyFile: good.Key, InsecureSkipVerify: true}, "adminTls",
			[]string{"adminTls.insecureSkipVerify: a client setting"}},
		{"files checked too", tlsfiles.Files{CertFile: good.Cert}, "tls", []string{"tls.keyFile: must be set when tls.certFile is"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, "ValidateServer", tc.f.ValidateServer(tc.field), tc.want)
		})
	}
}

// wantError checks that err contains every substring of want, or, with a
// nil want, that there is no error. It reports whether err is an error.
func wantError(t *testing.T, call string, err error, want []string) bool {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("%s: %v", call, err)
		}
		return false
	}
	if err == nil {
		t.Fatalf("%s: no error, want %q", call, want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	return true
}

// assertNoSecret fails when s quotes any private key material.
func assertNoSecret(t *testing.T, s string, keys ...any) {
	t.Helper()
	for _, k := range keys {
		var pemKey []byte
		switch k := k.(type) {
		case tlstest.Paths:
			b, err := os.ReadFile(k.Key)
			if err != nil {
				t.Fatal(err)
			}
			pemKey = b
		case tlstest.Issued:
			pemKey = k.KeyPEM
		}
		// The base64 body, line by line: any line of it would give the key away.
		for _, line := range strings.Split(string(pemKey), "\n") {
			if len(line) > 16 && !strings.HasPrefix(line, "-----") && strings.Contains(s, line) {
				t.Fatalf("%q contains private key material", s)
			}
		}
	}
}

// result is one side of a test handshake.
type result struct {
	state tls.ConnectionState
	err   error
}

// handshake runs a TLS handshake over a loopback TCP connection dialed to
// dialHost (which, like tls.Dial, becomes the client's ServerName when the
// config has none) and exchanges one byte, so a server that rejects the
// client after a TLS 1.3 handshake still fails the client. It returns both
// sides' results.
func handshake(t *testing.T, client, server *tls.Config, dialHost string) (c, s result) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	serverDone := make(chan result, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			serverDone <- result{err: err}
			return
		}
		defer nc.Close()
		tc := tls.Server(nc, server)
		if err := tc.HandshakeContext(ctx); err != nil {
			serverDone <- result{err: err}
			return
		}
		_, err = tc.Write([]byte{1})
		serverDone <- result{state: tc.ConnectionState(), err: err}
	}()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	cfg := client.Clone()
	if cfg.ServerName == "" {
		cfg.ServerName = dialHost
	}
	tc := tls.Client(nc, cfg)
	c.err = tc.HandshakeContext(ctx)
	if c.err == nil {
		c.state = tc.ConnectionState()
		_ = nc.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, c.err = tc.Read(make([]byte, 1))
	}
	nc.Close()
	select {
	case s = <-serverDone:
	case <-ctx.Done():
		t.Fatal("server side of the handshake did not finish")
	}
	return c, s
}

func TestHandshake(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	otherCA := tlstest.NewCA(t, "other")
	dir := t.TempDir()
	write := func(name string, ca *tlstest.CA, is tlstest.Issued) tlstest.Paths {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		return tlstest.Write(t, d, ca, is)
	}
	server := write("server", ca, ca.Localhost(t))
	serverOther := write("server-other", otherCA, otherCA.Localhost(t))
	serverExpired := write("server-expired", ca, ca.Issue(t, tlstest.Leaf{CommonName: "localhost", DNSNames: []string{"localhost"},
		Server: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	client := write("client", ca, ca.Issue(t, tlstest.Leaf{CommonName: "sidecar-a", Client: true}))
	clientOther := write("client-other", otherCA, otherCA.Issue(t, tlstest.Leaf{CommonName: "intruder", Client: true}))

	for _, tc := range []struct {
		name       string
		client     tlsfiles.Files
		server     tlsfiles.Files
		requireMTL bool
		dialHost   string
		clientErr  string // substring; "" means success
		serverErr  string
		clientCN   string // CN the server must see
	}{
		{name: "tls by name", client: tlsfiles.Files{CAFile: server.CA},
			server: tlsfiles.Files{CertFile: server.Cert, KeyFile: server.Key}, dialHost: "localhost"},
		{name: "tls by ip with ServerName", client: tlsfiles.Files{CAFile: server.CA}.ForAddr("127.0.0.1:9180"),
			server: tlsfiles.Files{CertFile: server.Cert, KeyFile: server.Key}, dialHost: "127.0.0.1"},
		{name: "tls by ip without ServerName", client: tlsfiles.Files{CAFile: server.CA},
			server: tlsfiles.Files{CertFile: server.Cert, KeyFile: server.Key}, dialHost: "127.0.0.1",
			clientErr: "set serverName"},
		{name: "wrong name", client: tlsfiles.Files{CAFile: server.CA, ServerName: "control.example"},
			server: tlsfiles.Files{CertFile: server.Cert, KeyFile: server.Key}, dialHost: "localhost",
			clientErr: `verify server certificate for "control.example"`},
		{name: "server cert from another CA", client: tlsfiles.Files{CAFile: server.CA},
			server: tlsfiles.Files{CertFile: serverOther.Cert, KeyFile: serverOther.Key}, dialHost: "localhost",
			clientErr: "against CA file " + server.CA + ": x509: certificate signed by unknown authority"},
		{name: "expired server cert", client: tlsfiles.Files{CAFile: server.CA},
			server: tlsfiles.Files{CertFile: serverExpired.Cert, KeyFile: serverExpired.Key}, dialHost: "localhost",
			clientErr: "certificate has expired"},
		{name: "insecure skips everything", client: tlsfiles.Files{CAFile: server.CA, InsecureSkipVerify: true},
			server: tlsfiles.Files{CertFile: serverOther.Cert, KeyFile: serverOther.Key}, dialHost: "127.0.0.1"},
		{name: "mtls", client: tlsfiles.Files{CAFile: server.CA, CertFile: client.Cert, KeyFile: client.Key},
			server: tlsfiles.Files{CAFile: client.CA, CertFile: server.Cert, KeyFile: server.Key}, requireMTL: true,
			dialHost: "localhost", clientCN: "sidecar-a"},
		{name: "mtls without client cert", client: tlsfiles.Files{CAFile: server.CA},
			server: tlsfiles.Files{CAFile: client.CA, CertFile: server.Cert, KeyFile: server.Key}, requireMTL: true,
			dialHost: "localhost", clientErr: "certificate", serverErr: "client didn't provide a certificate"},
		{name: "mtls client cert from another CA", client: tlsfiles.Files{CAFile: server.CA, CertFile: clientOther.Cert, KeyFile: clientOther.Key},
			server: tlsfiles.Files{CAFile: client.CA, CertFile: server.Cert, KeyFile: server.Key}, requireMTL: true,
			dialHost: "localhost", clientErr: "bad certificate",
			serverErr: `verify client certificate "intruder" against CA file ` + client.CA + ": x509: certificate signed by unknown authority"},
		{name: "optional client cert absent", client: tlsfiles.Files{CAFile: server.CA},
			server:   tlsfiles.Files{CAFile: client.CA, CertFile: server.Cert, KeyFile: server.Key},
			dialHost: "localhost"},
		{name: "optional client cert present is verified", client: tlsfiles.Files{CAFile: server.CA, CertFile: clientOther.Cert, KeyFile: clientOther.Key},
			server:   tlsfiles.Files{CAFile: client.CA, CertFile: server.Cert, KeyFile: server.Key},
			dialHost: "localhost", clientErr: "bad certificate", serverErr: "signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ccfg, err := tlsfiles.ClientConfig(tc.client)
			if err != nil {
				t.Fatalf("ClientConfig: %v", err)
			}
			scfg, err := tlsfiles.ServerConfig(tc.server, tc.requireMTL)
			if err != nil {
				t.Fatalf("ServerConfig: %v", err)
			}
			c, s := handshake(t, ccfg, scfg, tc.dialHost)
			if tc.clientErr == "" {
				if c.err != nil || s.err != nil {
					t.Fatalf("handshake: client %v, server %v", c.err, s.err)
				}
			} else if c.err == nil || !strings.Contains(c.err.Error(), tc.clientErr) {
				t.Fatalf("client error %v, want it to contain %q", c.err, tc.clientErr)
			}
			if tc.serverErr != "" && (s.err == nil || !strings.Contains(s.err.Error(), tc.serverErr)) {
				t.Fatalf("server error %v, want it to contain %q", s.err, tc.serverErr)
			}
			if tc.clientCN != "" {
				if len(s.state.PeerCertificates) == 0 || s.state.PeerCertificates[0].Subject.CommonName != tc.clientCN {
					t.Fatalf("server saw peer certificates %v, want CN %q", s.state.PeerCertificates, tc.clientCN)
				}
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	for _, tc := range []struct {
		name string
		run  func() error
		want string
	}{
		{"client missing ca", func() error { _, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: missing}); return err }, "tls client CA: open " + missing},
		{"client missing cert", func() error {
			_, err := tlsfiles.ClientConfig(tlsfiles.Files{CertFile: missing, KeyFile: missing})
			return err
		}, "tls client certificate: open " + missing},
		{"client half pair", func() error { _, err := tlsfiles.ClientConfig(tlsfiles.Files{CertFile: missing}); return err }, "certFile and keyFile must be set together"},
		{"server no cert", func() error { _, err := tlsfiles.ServerConfig(tlsfiles.Files{CAFile: missing}, false); return err }, "certFile and keyFile are required"},
		{"server mtls without ca", func() error {
			_, err := tlsfiles.ServerConfig(tlsfiles.Files{CertFile: missing, KeyFile: missing}, true)
			return err
		}, "needs caFile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestServerReload rotates the serving certificate (atomically, then in
// place) and checks the next handshake presents the new one without a new
// config.
func TestServerReload(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	dir := t.TempDir()
	first := ca.Localhost(t)
	p := tlstest.Write(t, dir, ca, first)
	scfg, err := tlsfiles.ServerConfig(tlsfiles.Files{CertFile: p.Cert, KeyFile: p.Key}, false)
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	serial := func() string {
		t.Helper()
		c, s := handshake(t, ccfg, scfg, "localhost")
		if c.err != nil || s.err != nil {
			t.Fatalf("handshake: client %v, server %v", c.err, s.err)
		}
		return c.state.PeerCertificates[0].SerialNumber.String()
	}
	if got := serial(); got != first.Cert.SerialNumber.String() {
		t.Fatalf("serving serial %s, want %s", got, first.Cert.SerialNumber)
	}

	second := ca.Localhost(t)
	tlstest.Replace(t, p.Cert, second.CertPEM)
	tlstest.Replace(t, p.Key, second.KeyPEM)
	if got := serial(); got != second.Cert.SerialNumber.String() {
		t.Fatalf("after atomic rotation serving serial %s, want %s", got, second.Cert.SerialNumber)
	}

	// In place: same inode, so the modification time is what tells. Move it
	// forward explicitly: two writes within one clock tick can share a time.
	third := ca.Localhost(t)
	later := time.Now().Add(time.Minute)
	for path, data := range map[string][]byte{p.Cert: third.CertPEM, p.Key: third.KeyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(path, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if got := serial(); got != third.Cert.SerialNumber.String() {
		t.Fatalf("after in-place rotation serving serial %s, want %s", got, third.Cert.SerialNumber)
	}
}

// TestReloadKeepsLastGood writes a key that does not match the certificate:
// the server keeps serving the previous pair and reports the failure.
func TestReloadKeepsLastGood(t *testing.T) {
	ca := tlstest.NewCA(t, "ca")
	dir := t.TempDir()
	first := ca.Localhost(t)
	p := tlstest.Write(t, dir, ca, first)
	var reloadErrs []error
	scfg, err := tlsfiles.ServerConfig(tlsfiles.Files{CertFile: p.Cert, KeyFile: p.Key}, false,
		tlsfiles.OnReloadError(func(err error) { reloadErrs = append(reloadErrs, err) }))
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: p.CA})
	if err != nil {
		t.Fatal(err)
	}
	mismatched := ca.Localhost(t)
	tlstest.Replace(t, p.Key, mismatched.KeyPEM)
	c, s := handshake(t, ccfg, scfg, "localhost")
	if c.err != nil || s.err != nil {
		t.Fatalf("handshake: client %v, server %v", c.err, s.err)
	}
	if got := c.state.PeerCertificates[0].SerialNumber; got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("serving serial %s, want the previous %s", got, first.Cert.SerialNumber)
	}
	// GetCertificate ran on the server goroutine; handshake() received from
	// its done channel afterwards, so reloadErrs is safe to read.
	if len(reloadErrs) != 1 || !strings.Contains(reloadErrs[0].Error(), "private key does not match") {
		t.Fatalf("reload errors %v, want one key mismatch", reloadErrs)
	}
	assertNoSecret(t, reloadErrs[0].Error(), first, mismatched)
}

// TestClientReload rotates the client's CA (the server moved to a new CA)
// and the client's certificate, and checks both take effect on the next
// handshake.
func TestClientReload(t *testing.T) {
	oldCA := tlstest.NewCA(t, "old")
	newCA := tlstest.NewCA(t, "new")
	dir := t.TempDir()
	serverDir := filepath.Join(dir, "server")
	clientDir := filepath.Join(dir, "client")
	for _, d := range []string{serverDir, clientDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The server trusts both CAs for clients; it serves a certificate from
	// the old CA first.
	sp := tlstest.Write(t, serverDir, oldCA, oldCA.Localhost(t))
	tlstest.Replace(t, sp.CA, append(append([]byte{}, oldCA.PEM...), newCA.PEM...))
	cp := tlstest.Write(t, clientDir, oldCA, oldCA.Issue(t, tlstest.Leaf{CommonName: "before", Client: true}))

	scfg, err := tlsfiles.ServerConfig(tlsfiles.Files{CAFile: sp.CA, CertFile: sp.Cert, KeyFile: sp.Key}, true)
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: cp.CA, CertFile: cp.Cert, KeyFile: cp.Key})
	if err != nil {
		t.Fatal(err)
	}
	if c, s := handshake(t, ccfg, scfg, "localhost"); c.err != nil || s.err != nil {
		t.Fatalf("handshake: client %v, server %v", c.err, s.err)
	} else if cn := s.state.PeerCertificates[0].Subject.CommonName; cn != "before" {
		t.Fatalf("server saw client %q, want before", cn)
	}

	// The server moves to the new CA: the client rejects it until its CA
	// file is rotated too.
	rotated := newCA.Localhost(t)
	tlstest.Replace(t, sp.Cert, rotated.CertPEM)
	tlstest.Replace(t, sp.Key, rotated.KeyPEM)
	c, _ := handshake(t, ccfg, scfg, "localhost")
	if c.err == nil || !strings.Contains(c.err.Error(), "unknown authority") {
		t.Fatalf("client error %v, want unknown authority before its CA is rotated", c.err)
	}

	tlstest.Replace(t, cp.CA, newCA.PEM)
	after := newCA.Issue(t, tlstest.Leaf{CommonName: "after", Client: true})
	tlstest.Replace(t, cp.Cert, after.CertPEM)
	tlstest.Replace(t, cp.Key, after.KeyPEM)
	c, s := handshake(t, ccfg, scfg, "localhost")
	if c.err != nil || s.err != nil {
		t.Fatalf("handshake after rotation: client %v, server %v", c.err, s.err)
	}
	if cn := s.state.PeerCertificates[0].Subject.CommonName; cn != "after" {
		t.Fatalf("server saw client %q, want after", cn)
	}
}
