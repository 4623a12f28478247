package kafkatest

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/switchyard/switchyard/internal/tlsfiles"
	"github.com/switchyard/switchyard/internal/tlsfiles/tlstest"
	"github.com/switchyard/switchyard/kafkasec"
)

// SASL credentials of the in-process secure clusters (the real test bed's
// come from its env file).
const (
	fakeSASLUser     = "alice"
	fakeSASLPassword = "alice-secret"
)

// SecureOptions shape a secure cluster.
type SecureOptions struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.
	Mechanism string
	// ReauthMs, on kfake, sets connections.max.reauth.ms (KIP-368); the
	// real test bed has its own (SWITCHYARD_TEST_SASL_REAUTH_MS).
	ReauthMs int
}

// Secure returns a SASL_SSL cluster: on kfake a new in-process cluster
// with TLS (a CA made for the test) and SASL users for every mechanism; on
// real Kafka the SASL_SSL listener of the test bed's cluster called name
// ("source" or "target"), which `make kafka-up-secure` (and test-real)
// start. Security holds what connects to it, the password in a file.
func Secure(t testing.TB, name string, o SecureOptions) *Cluster {
	t.Helper()
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	switch Backend() {
	case BackendReal:
		boot := Env("SWITCHYARD_TEST_" + upper(name) + "_SASL_SSL")
		if boot == "" {
			msg := "the real test bed has no SASL_SSL listener: start it with `make kafka-up-secure` (test-real does)"
			if os.Getenv("SWITCHYARD_REQUIRE_SECURE") == "1" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
		writeFile(t, pwFile, Env("SWITCHYARD_TEST_SASL_PASSWORD"))
		c := &Cluster{Name: name, Bootstrap: splitAddrs(boot)}
		c.Security = kafkasec.Config{
			TLS:  kafkasec.TLS{Enabled: true, CAFile: Env("SWITCHYARD_TEST_CA_PEM")},
			SASL: kafkasec.SASL{Mechanism: o.Mechanism, Username: Env("SWITCHYARD_TEST_SASL_USER"), PasswordFile: pwFile},
		}
		if err := reachable(c.Bootstrap); err != nil {
			t.Fatalf("SASL_SSL listener of %s at %s: %v", name, boot, err)
		}
		return c
	}
	ca := tlstest.NewCA(t, "kafkatest-"+name)
	paths := tlstest.Write(t, dir, ca, ca.Localhost(t))
	srv, err := tlsfiles.ServerConfig(tlsfiles.Files{CertFile: paths.Cert, KeyFile: paths.Key}, false)
	if err != nil {
		t.Fatalf("kfake TLS: %v", err)
	}
	opts := []kfake.Opt{kfake.EnableSASL(), kfake.TLS(srv)}
	for _, m := range []string{kafkasec.MechPlain, kafkasec.MechScramSHA256, kafkasec.MechScramSHA512} {
		opts = append(opts, kfake.Superuser(m, fakeSASLUser, fakeSASLPassword))
	}
	if o.ReauthMs > 0 {
		opts = append(opts, kfake.BrokerConfigs(map[string]string{"connections.max.reauth.ms": strconv.Itoa(o.ReauthMs)}))
	}
	c := NewFake(t, name, 1, opts...)
	writeFile(t, pwFile, fakeSASLPassword)
	c.Security = kafkasec.Config{
		TLS:  kafkasec.TLS{Enabled: true, CAFile: paths.CA},
		SASL: kafkasec.SASL{Mechanism: o.Mechanism, Username: fakeSASLUser, PasswordFile: pwFile},
	}
	return c
}

// ReauthInterval is how often the secure clusters of the current backend
// make SASL sessions expire (zero: they do not).
func ReauthInterval(o SecureOptions) time.Duration {
	if Backend() == BackendReal {
		ms, _ := strconv.Atoi(Env("SWITCHYARD_TEST_SASL_REAUTH_MS"))
		return time.Duration(ms) * time.Millisecond
	}
	return time.Duration(o.ReauthMs) * time.Millisecond
}

// kgoSecurity returns the franz-go options for c's security.
func (c *Cluster) kgoSecurity(t testing.TB) []kgo.Opt {
	t.Helper()
	if !c.Security.Enabled() {
		return nil
	}
	sec, err := kafkasec.New(t.Context(), c.Name, c.Security)
	if err != nil {
		t.Fatalf("security for %s: %v", c.Name, err)
	}
	return sec.KgoOpts(0)
}

// TLSClientConfig returns a client TLS configuration trusting c's CA.
func (c *Cluster) TLSClientConfig(t testing.TB) *tls.Config {
	t.Helper()
	cfg, err := tlsfiles.ClientConfig(tlsfiles.Files{CAFile: c.Security.TLS.CAFile})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// PlainToSecure returns a PLAINTEXT source and a SASL_SSL target (the
// self-managed Kafka to MSK shape): the test bed's source and the SASL_SSL
// listener of its target, or two in-process clusters.
func PlainToSecure(t testing.TB, mechanism string) (source, target *Cluster) {
	t.Helper()
	if Backend() == BackendReal {
		source, _ = realPair(t)
	} else {
		source = NewFake(t, "source", 1)
	}
	return source, Secure(t, "target", SecureOptions{Mechanism: mechanism})
}
