package kafkasec

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/aws"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// UserAgent is sent with AWS_MSK_IAM authentication (MSK logs it; IAM
// policies can match aws:UserAgent).
var UserAgent = "switchyard"

// mechanism builds the SASL mechanism for s (nil for none). Credentials
// are read when a connection authenticates, not here, so a rotated
// password or token file is picked up without a restart.
func mechanism(ctx context.Context, s SASL) (sasl.Mechanism, error) {
	switch s.Mechanism {
	case "":
		return nil, nil
	case MechPlain:
		return plain.Plain(func(context.Context) (plain.Auth, error) {
			pw, err := s.password()
			return plain.Auth{User: s.Username, Pass: pw}, err
		}), nil
	case MechScramSHA256, MechScramSHA512:
		fn := func(context.Context) (scram.Auth, error) {
			pw, err := s.password()
			return scram.Auth{User: s.Username, Pass: pw}, err
		}
		if s.Mechanism == MechScramSHA256 {
			return scram.Sha256(fn), nil
		}
		return scram.Sha512(fn), nil
	case MechOAuthBearer:
		ts := &tokenSource{file: s.TokenFile, command: s.TokenCommand, refresh: s.TokenRefresh}
		if ts.refresh == 0 {
			ts.refresh = 5 * time.Minute
		}
		return oauth.Oauth(func(ctx context.Context) (oauth.Auth, error) {
			tok, err := ts.token(ctx)
			return oauth.Auth{Token: tok}, err
		}), nil
	case MechAWSMSKIAM:
		// LoadDefaultConfig reads the environment and the shared files;
		// the credential provider it returns caches and refreshes.
		cfg, err := awsconfig.LoadDefaultConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("AWS credential chain: %w", err)
		}
		return aws.ManagedStreamingIAM(func(ctx context.Context) (aws.Auth, error) {
			creds, err := cfg.Credentials.Retrieve(ctx)
			if err != nil {
				return aws.Auth{}, fmt.Errorf("AWS credentials: %w", err)
			}
			return aws.Auth{AccessKey: creds.AccessKeyID, SecretKey: creds.SecretAccessKey,
				SessionToken: creds.SessionToken, UserAgent: UserAgent}, nil
		}), nil
	}
	return nil, fmt.Errorf("unknown SASL mechanism %q", s.Mechanism)
}

func (s SASL) password() (string, error) {
	if s.PasswordFile == "" {
		return s.Password, nil
	}
	pw, err := readSecretFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("sasl password: %w", err)
	}
	return pw, nil
}

// tokenSource hands out OAUTHBEARER tokens from a file (read every time)
// or a command (cached until shortly before the token expires).
type tokenSource struct {
	file    string
	command []string
	refresh time.Duration
	now     func() time.Time // tests

	mu      sync.Mutex
	cached  string
	renewAt time.Time
}

// tokenCommandTimeout bounds one run of the token command.
const tokenCommandTimeout = 30 * time.Second

func (ts *tokenSource) token(ctx context.Context) (string, error) {
	if ts.file != "" {
		tok, err := readSecretFile(ts.file)
		if err != nil {
			return "", fmt.Errorf("oauth token: %w", err)
		}
		return tok, nil
	}
	now := time.Now
	if ts.now != nil {
		now = ts.now
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.cached != "" && now().Before(ts.renewAt) {
		return ts.cached, nil
	}
	cctx, cancel := context.WithTimeout(ctx, tokenCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, ts.command[0], ts.command[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		if msg != "" {
			return "", fmt.Errorf("oauth token command %s: %w: %s", ts.command[0], err, msg)
		}
		return "", fmt.Errorf("oauth token command %s: %w", ts.command[0], err)
	}
	tok := strings.TrimSpace(stdout.String())
	if tok == "" {
		return "", fmt.Errorf("oauth token command %s printed no token", ts.command[0])
	}
	ts.cached = tok
	ts.renewAt = now().Add(ts.refresh)
	if exp, ok := jwtExpiry(tok); ok {
		// Renew a minute before expiry, never later than the refresh period.
		if at := exp.Add(-time.Minute); at.Before(ts.renewAt) {
			ts.renewAt = at
		}
	}
	return tok, nil
}

// jwtExpiry returns the "exp" claim of a JWT; ok is false for anything
// that is not a JWT with one.
func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(int64(*claims.Exp), 0), true
}

// errNoSecretInMessage guards the rule that errors never carry secrets; it
// is what a caller sees if a mechanism's own error would have.
var errNoSecretInMessage = errors.New("authentication failed (details withheld: they contained a secret)")

// scrub replaces err by errNoSecretInMessage when its text contains one of
// the secrets (a broker or library echoing a credential).
func scrub(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range secrets {
		if len(s) >= 4 && strings.Contains(msg, s) {
			return errNoSecretInMessage
		}
	}
	return err
}

// secrets returns the secret values s holds now, for scrub.
func (s SASL) secrets() []string {
	var out []string
	if pw, err := s.password(); err == nil && pw != "" {
		out = append(out, pw)
	}
	if s.TokenFile != "" {
		if b, err := os.ReadFile(s.TokenFile); err == nil {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return out
}
