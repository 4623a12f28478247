package kafkasec_test

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/switchyard/switchyard/internal/kafkatest"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
	"github.com/switchyard/switchyard/kafkasec"
)

func dial(t *testing.T, c *kafkatest.Cluster, cfg kafkasec.Config) (*kafkasec.Security, *kafkasec.Conn, error) {
	t.Helper()
	if err := cfg.Validate("clusters[0] (" + c.Name + ")"); err != nil {
		t.Fatalf("validate: %v", err)
	}
	sec, err := kafkasec.New(context.Background(), c.Name, cfg)
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	conn, err := sec.Dial(context.Background(), c.Bootstrap[0], 10*time.Second)
	if err == nil {
		t.Cleanup(func() { conn.Close() })
	}
	return sec, conn, err
}

// TestDialAuthenticates: every mechanism logs in over TLS, and a connection
// made that way serves Kafka requests (a franz-go client with the same
// settings produces and reads back).
func TestDialAuthenticates(t *testing.T) {
	for _, mech := range []string{kafkasec.MechPlain, kafkasec.MechScramSHA256, kafkasec.MechScramSHA512} {
		t.Run(mech, func(t *testing.T) {
			c := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: mech})
			_, conn, err := dial(t, c, c.Security)
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			if conn == nil {
				t.Fatal("no connection")
			}
			topic := kafkatest.Topic(t, "sec")
			c.CreateTopic(t, topic, 1) // through kgo with KgoOpts
		})
	}
}

// TestDialFailuresAreClear: wrong password, wrong CA, expired certificate,
// unreachable broker, wrong mechanism — each error names the cluster, the
// broker and the cause, and never the password.
func TestDialFailuresAreClear(t *testing.T) {
	c := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: kafkasec.MechScramSHA512})
	dir := t.TempDir()
	wrongPw := filepath.Join(dir, "wrong")
	os.WriteFile(wrongPw, []byte("not-the-password-123\n"), 0o600)
	otherCA := tlstest.NewCA(t, "other")
	otherCAFile := filepath.Join(dir, "other-ca.pem")
	os.WriteFile(otherCAFile, otherCA.PEM, 0o600)

	cases := []struct {
		name string
		edit func(*kafkasec.Config)
		want []string
	}{
		{"wrong-password", func(c *kafkasec.Config) { c.SASL.PasswordFile = wrongPw },
			[]string{"cluster target", "SASL SCRAM-SHA-512"}},
		{"wrong-ca", func(c *kafkasec.Config) { c.TLS.CAFile = otherCAFile },
			[]string{"cluster target", "TLS handshake", "certificate"}},
		{"no-tls", func(c *kafkasec.Config) { c.TLS = kafkasec.TLS{} },
			[]string{"cluster target", "SASL SCRAM-SHA-512 handshake"}},
		{"wrong-server-name", func(c *kafkasec.Config) { c.TLS.ServerName = "kafka.example.com" },
			[]string{"TLS handshake", "kafka.example.com"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := c.Security
			tc.edit(&cfg)
			_, _, err := dial(t, c, cfg)
			if err == nil {
				t.Fatal("dial succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, secret := range []string{"not-the-password-123", "alice-secret"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains a password", err)
				}
			}
		})
	}
	t.Run("wrong-password-says-so", func(t *testing.T) {
		cfg := c.Security
		cfg.SASL.PasswordFile = wrongPw
		_, _, err := dial(t, c, cfg)
		// Kafka answers SASL_AUTHENTICATION_FAILED; kfake hangs up.
		if !errors.Is(err, kerr.SaslAuthenticationFailed) && !strings.Contains(err.Error(), "wrong credentials?") {
			t.Errorf("err = %v, want SASL_AUTHENTICATION_FAILED or a hint at the credentials", err)
		}
		if kafkatest.Backend() == kafkatest.BackendReal && !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Errorf("err = %v, want SASL_AUTHENTICATION_FAILED from Kafka", err)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		sec, err := kafkasec.New(context.Background(), "gone", c.Security)
		if err != nil {
			t.Fatal(err)
		}
		_, err = sec.Dial(context.Background(), "127.0.0.1:1", 2*time.Second)
		if err == nil || !strings.Contains(err.Error(), "cluster gone broker 127.0.0.1:1: dial") {
			t.Errorf("err = %v", err)
		}
	})
}

// TestExpiredCertificateRejected: a broker serving an expired certificate
// is refused with an error saying so.
func TestExpiredCertificateRejected(t *testing.T) {
	if kafkatest.Backend() != kafkatest.BackendKfake {
		t.Skip("the real test bed's certificates are valid")
	}
	c := kafkatest.Secure(t, "target", kafkatest.SecureOptions{Mechanism: kafkasec.MechPlain})
	// A CA file that does hold the broker's issuer is not enough when the
	// broker's certificate expired: make a CA and an expired leaf and
	// serve them from a TLS listener of our own.
	ca := tlstest.NewCA(t, "expired-test")
	leaf := ca.Issue(t, tlstest.Leaf{CommonName: "localhost", DNSNames: []string{"localhost"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour), Server: true})
	paths := tlstest.Write(t, t.TempDir(), ca, leaf)
	addr := serveTLS(t, paths.Cert, paths.Key)
	cfg := c.Security
	cfg.TLS.CAFile = paths.CA
	cfg.TLS.ServerName = "localhost"
	sec, err := kafkasec.New(context.Background(), "target", cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = sec.Dial(context.Background(), addr, 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("err = %v, want an expiry error", err)
	}
}

// TestReauthenticate: with a session lifetime set by the broker, the
// connection knows when to renew, and renewing works on the same
// connection, which keeps serving requests.
func TestReauthenticate(t *testing.T) {
	o := kafkatest.SecureOptions{Mechanism: kafkasec.MechScramSHA256, ReauthMs: 60_000}
	c := kafkatest.Secure(t, "target", o)
	life := kafkatest.ReauthInterval(o)
	if life == 0 {
		t.Skip("the test bed's sessions do not expire")
	}
	before := time.Now()
	sec, conn, err := dial(t, c, c.Security)
	if err != nil {
		t.Fatal(err)
	}
	at := conn.ReauthAt()
	if at.Before(before) || at.After(before.Add(life)) {
		t.Fatalf("renew at %v, want within the %v lifetime from %v", at, life, before)
	}
	if conn.ReauthDue() {
		t.Fatal("due at once")
	}
	if !conn.DueAt(at) {
		t.Fatal("not due at its renewal time")
	}
	// Kafka accepts at most one re-authentication a second per
	// connection (KafkaChannel's MIN_REAUTH_INTERVAL_ONE_SECOND_MS), so
	// one renewal here; the proxy tests renew repeatedly over time.
	for i := 0; i < 1; i++ {
		if err := sec.Reauthenticate(context.Background(), conn, 10*time.Second); err != nil {
			t.Fatalf("reauthenticate %d: %v", i, err)
		}
		// The connection still serves requests after renewing.
		req := kmsg.NewPtrMetadataRequest()
		req.Version = 4
		resp := kmsg.NewPtrMetadataResponse()
		if err := kafkasec.RoundTrip(conn, int32(100+i), req, resp); err != nil {
			t.Fatalf("metadata after reauthentication %d: %v", i, err)
		}
		if len(resp.Brokers) == 0 {
			t.Fatalf("metadata after reauthentication %d: no brokers", i)
		}
	}
	if !conn.ReauthAt().After(at) {
		t.Errorf("renewal time %v did not move past %v", conn.ReauthAt(), at)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("secret-value\n"), 0o600)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		cfg  kafkasec.Config
		want string // "" = valid
	}{
		{kafkasec.Config{}, ""},
		{kafkasec.Config{TLS: kafkasec.TLS{Enabled: true}}, ""},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "scram-sha-512", Username: "u", PasswordFile: pw}}, ""},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "GSSAPI"}}, "c.sasl.mechanism: \"GSSAPI\" is not one of"},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "PLAIN", PasswordFile: pw}}, "c.sasl.username: required for PLAIN"},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "PLAIN", Username: "u"}}, "exactly one of password and passwordFile"},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "PLAIN", Username: "u", Password: "x", PasswordFile: pw}}, "exactly one of password and passwordFile"},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: empty}}, "c.sasl.passwordFile: " + empty + " is empty"},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "PLAIN", Username: "u", PasswordFile: dir + "/nope"}}, "c.sasl.passwordFile: open"},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "OAUTHBEARER"}}, "exactly one of tokenFile and tokenCommand"},
		{kafkasec.Config{SASL: kafkasec.SASL{Mechanism: "AWS_MSK_IAM"}}, "AWS_MSK_IAM requires tls.enabled"},
		{kafkasec.Config{TLS: kafkasec.TLS{CAFile: pw}}, "c.tls.enabled: TLS settings are given"},
		{kafkasec.Config{TLS: kafkasec.TLS{Enabled: true, CAFile: pw}}, "c.tls.caFile"},
		{kafkasec.Config{SASL: kafkasec.SASL{Username: "u"}}, "c.sasl.mechanism: empty, but SASL credentials"},
	} {
		err := tc.cfg.Validate("c")
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: err = %v, want %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-value") {
			t.Errorf("error %q contains the password", err)
		}
	}
}

// TestNoSecretsInStrings: formatting a config never shows a password.
func TestNoSecretsInStrings(t *testing.T) {
	cfg := kafkasec.Config{TLS: kafkasec.TLS{Enabled: true},
		SASL: kafkasec.SASL{Mechanism: "SCRAM-SHA-512", Username: "app", Password: "hunter2-secret"}}
	for _, s := range []string{cfg.String(), cfg.GoString(), cfg.SASL.String(), cfg.SASL.GoString()} {
		if strings.Contains(s, "hunter2") {
			t.Errorf("%q shows the password", s)
		}
	}
	if got, want := cfg.String(), "SASL_SSL SCRAM-SHA-512 user=app"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

// serveTLS accepts TLS connections with the given certificate until the
// test ends (handshakes only).
func serveTLS(t *testing.T, certFile, keyFile string) string {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*tls.Conn).Handshake()
			}()
		}
	}()
	return ln.Addr().String()
}
