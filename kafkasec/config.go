package kafkasec

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/switchyard/switchyard/internal/tlsfiles"
)

// Config is one cluster's security settings. The zero value is PLAINTEXT.
type Config struct {
	TLS  TLS  `yaml:"tls" json:"tls"`
	SASL SASL `yaml:"sasl" json:"sasl"`
}

// TLS configures the connection's TLS. Without a CA file the system's
// roots are trusted (Amazon MSK's certificates chain to them).
type TLS struct {
	Enabled bool `yaml:"enabled" json:"enabled"`
	// CAFile holds PEM certificates trusted to sign the brokers'.
	CAFile string `yaml:"caFile" json:"caFile,omitempty"`
	// CertFile and KeyFile hold the client certificate for mTLS.
	CertFile string `yaml:"certFile" json:"certFile,omitempty"`
	KeyFile  string `yaml:"keyFile" json:"keyFile,omitempty"`
	// ServerName overrides the name verified in the broker's certificate
	// (default: the host dialled).
	ServerName string `yaml:"serverName" json:"serverName,omitempty"`
	// InsecureSkipVerify turns certificate verification off. Only for
	// tests; the proxy logs a warning when it is set.
	InsecureSkipVerify bool `yaml:"insecureSkipVerify" json:"insecureSkipVerify,omitempty"`
}

// The SASL mechanisms supported.
const (
	MechPlain       = "PLAIN"
	MechScramSHA256 = "SCRAM-SHA-256"
	MechScramSHA512 = "SCRAM-SHA-512"
	MechOAuthBearer = "OAUTHBEARER"
	MechAWSMSKIAM   = "AWS_MSK_IAM"
)

// SASL configures the authentication after connecting (and after TLS).
type SASL struct {
	// Mechanism is one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER,
	// AWS_MSK_IAM; empty means no SASL.
	Mechanism string `yaml:"mechanism" json:"mechanism,omitempty"`

	// PLAIN and SCRAM: the user, and its password — from PasswordFile
	// (preferred: a mounted secret) or Password.
	Username     string `yaml:"username" json:"username,omitempty"`
	Password     string `yaml:"password" json:"-"`
	PasswordFile string `yaml:"passwordFile" json:"passwordFile,omitempty"`

	// OAUTHBEARER: the token is read from TokenFile at every
	// authentication (so a file rotated by another process is picked up),
	// or printed by TokenCommand (argv, no shell), which is run again when
	// the token is within a minute of its expiry (JWT "exp") or, for
	// tokens without one, every TokenRefresh (default 5m).
	TokenFile    string        `yaml:"tokenFile" json:"tokenFile,omitempty"`
	TokenCommand []string      `yaml:"tokenCommand" json:"tokenCommand,omitempty"`
	TokenRefresh time.Duration `yaml:"tokenRefresh" json:"tokenRefresh,omitempty"`

	// AWS_MSK_IAM uses the standard AWS credential chain (environment,
	// shared config and credentials files with AWS_PROFILE, web identity —
	// IRSA on EKS —, ECS and EC2 instance roles). The region comes from
	// the broker's host name, else AWS_REGION. Requires TLS.
}

// Enabled reports whether any security is configured.
func (c Config) Enabled() bool { return c.TLS.Enabled || c.SASL.Mechanism != "" }

// String describes the settings without secrets, e.g. "SASL_SSL
// SCRAM-SHA-512 user=app".
func (c Config) String() string {
	proto := "PLAINTEXT"
	switch {
	case c.TLS.Enabled && c.SASL.Mechanism != "":
		proto = "SASL_SSL"
	case c.TLS.Enabled:
		proto = "SSL"
	case c.SASL.Mechanism != "":
		proto = "SASL_PLAINTEXT"
	}
	s := proto
	if c.SASL.Mechanism != "" {
		s += " " + c.SASL.Mechanism
		if c.SASL.Username != "" {
			s += " user=" + c.SASL.Username
		}
	}
	if c.TLS.CertFile != "" {
		s += " client-cert"
	}
	if c.TLS.InsecureSkipVerify {
		s += " insecure-skip-verify"
	}
	return s
}

// GoString keeps secrets out of %#v.
func (c Config) GoString() string { return "kafkasec.Config{" + c.String() + "}" }

// GoString keeps the password out of %#v.
func (s SASL) GoString() string { return "kafkasec.SASL{" + s.Mechanism + " " + s.Username + "}" }

// String keeps the password out of %v.
func (s SASL) String() string { return s.GoString() }

func (t TLS) files() tlsfiles.Files {
	return tlsfiles.Files{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile,
		ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

// Normalize upper-cases the mechanism name.
func (c *Config) Normalize() {
	c.SASL.Mechanism = strings.ToUpper(strings.TrimSpace(c.SASL.Mechanism))
}

// Validate reports the first error, naming the field under prefix (e.g.
// "clusters[1] (target)"). Files are checked for readability; nothing is
// dialled.
func (c *Config) Validate(prefix string) error {
	c.Normalize()
	t := c.TLS
	if !t.Enabled && (t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" || t.ServerName != "" || t.InsecureSkipVerify) {
		return fmt.Errorf("%s.tls.enabled: TLS settings are given but tls.enabled is false", prefix)
	}
	if t.Enabled {
		if err := t.files().Validate(prefix + ".tls"); err != nil {
			return err
		}
	}
	s := c.SASL
	field := prefix + ".sasl"
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" || s.PasswordFile != "" || s.TokenFile != "" || len(s.TokenCommand) > 0 {
			return fmt.Errorf("%s.mechanism: empty, but SASL credentials are given", field)
		}
		return nil
	case MechPlain, MechScramSHA256, MechScramSHA512:
		if s.Username == "" {
			return fmt.Errorf("%s.username: required for %s", field, s.Mechanism)
		}
		if (s.Password == "") == (s.PasswordFile == "") {
			return fmt.Errorf("%s: exactly one of password and passwordFile is required for %s", field, s.Mechanism)
		}
		if s.PasswordFile != "" {
			if _, err := readSecretFile(s.PasswordFile); err != nil {
				return fmt.Errorf("%s.passwordFile: %w", field, err)
			}
		}
	case MechOAuthBearer:
		if (s.TokenFile == "") == (len(s.TokenCommand) == 0) {
			return fmt.Errorf("%s: exactly one of tokenFile and tokenCommand is required for OAUTHBEARER", field)
		}
		if s.TokenFile != "" {
			if _, err := os.Stat(s.TokenFile); err != nil {
				return fmt.Errorf("%s.tokenFile: %w", field, err)
			}
		}
		if s.TokenRefresh < 0 {
			return fmt.Errorf("%s.tokenRefresh: %v must not be negative", field, s.TokenRefresh)
		}
	case MechAWSMSKIAM:
		if !t.Enabled {
			return fmt.Errorf("%s.mechanism: AWS_MSK_IAM requires tls.enabled (MSK's IAM listener accepts TLS only)", field)
		}
		if s.Username != "" || s.Password != "" || s.PasswordFile != "" {
			return fmt.Errorf("%s: AWS_MSK_IAM takes its credentials from the AWS credential chain, not username/password", field)
		}
	default:
		return fmt.Errorf("%s.mechanism: %q is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, AWS_MSK_IAM", field, s.Mechanism)
	}
	return nil
}

// readSecretFile reads a file holding one secret, trimming the trailing
// newline editors and `kubectl create secret` leave.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		// os.PathError names the file, never its content.
		return "", err
	}
	v := strings.TrimRight(string(b), "\r\n")
	if v == "" {
		return "", errors.New(path + " is empty")
	}
	return v, nil
}
