package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"
	"github.com/switchyard/switchyard/internal/tlsfiles"
)

const ctlUsage = `Usage: switchyard ctl [flags] <command> [command flags]

The control plane's command-line client (gRPC): starts, follows and aborts
cutovers; lists the sidecars, mirrors and clusters the control plane knows.

Commands:
  cutover start --app NAME --from CLUSTER --to CLUSTER [flags]
                        start a cutover; prints its id (--watch follows it)
  cutover watch ID      follow a cutover live until it ends
  cutover status ID     show a cutover: steps, sidecars, lag, block window
  cutover list          list cutovers, newest first
  cutover abort ID      roll a cutover back (only before its gates are released)
  sidecars [--app NAME] list the sidecars that have connected
  sidecars declare --app NAME --active CLUSTER
                        declare where an application's sidecars run (after a
                        control plane lost its store); moves no client
  mirrors               list the mirrors and their lag
  clusters              list the clusters

Run 'switchyard ctl <command> --help' for a command's flags. The flags
below may also be given after the command.

Exit code: 0 on success — for watch and start --watch, when the cutover is
DONE; 1 on an error, or when the cutover ROLLED_BACK or FAILED; 2 on bad
flags.

Environment: SWITCHYARD_CONTROL sets --server; SWITCHYARD_CONTROL_TOKEN
holds the bearer token itself (--token-file wins over it);
SWITCHYARD_CONTROL_TLS_CA, _TLS_CERT, _TLS_KEY and _TLS_SERVER_NAME set the
--tls-* flags.

TLS: --tls-ca (the CA the control plane's certificate chains to) turns TLS
on; --tls-cert and --tls-key add a client certificate (mTLS); --tls alone
uses TLS with the system's roots. The server's name is verified: the
--server host, or --tls-server-name.

Example:
  switchyard ctl cutover start --app orders-service --from source --to target --watch

Flags:
`

const (
	defaultControlAddr   = "127.0.0.1:9180"
	envControlAddr       = "SWITCHYARD_CONTROL"
	envControlToken      = "SWITCHYARD_CONTROL_TOKEN"
	envControlTLSCA      = "SWITCHYARD_CONTROL_TLS_CA"
	envControlTLSCert    = "SWITCHYARD_CONTROL_TLS_CERT"
	envControlTLSKey     = "SWITCHYARD_CONTROL_TLS_KEY"
	envControlTLSName    = "SWITCHYARD_CONTROL_TLS_SERVER_NAME"
	controlTLSFlagPrefix = "--tls"
)

// ctlFlags are the flags every ctl command accepts, before or after the
// command's name.
type ctlFlags struct {
	server    string
	tokenFile string
	output    string
	timeout   time.Duration
	tls       bool
	tlsFiles  tlsfiles.Files
}

// useTLS reports whether the connection is TLS.
func (f *ctlFlags) useTLS() bool { return f.tls || f.tlsFiles.Enabled() }

// register adds the flags to fs with their current values as defaults, so
// registering them on a command's flag set keeps what was parsed before
// the command's name.
func (f *ctlFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.server, "server", f.server, "control plane gRPC `host:port` (env "+envControlAddr+")")
	fs.StringVar(&f.tokenFile, "token-file", f.tokenFile, "`file` holding the bearer token, trimmed of whitespace (default: env "+envControlToken+")")
	fs.StringVar(&f.output, "output", f.output, "output `format`: text or json (protojson, one object per line)")
	fs.DurationVar(&f.timeout, "timeout", f.timeout, "time allowed for each call (a watch is not bounded by it)")
	fs.BoolVar(&f.tls, "tls", f.tls, "connect with TLS (implied by the --tls-* flags; without --tls-ca, the system's roots)")
	fs.StringVar(&f.tlsFiles.CAFile, "tls-ca", f.tlsFiles.CAFile, "PEM `file` of the CA the control plane's certificate must chain to (env "+envControlTLSCA+")")
	fs.StringVar(&f.tlsFiles.CertFile, "tls-cert", f.tlsFiles.CertFile, "PEM `file` of a client certificate, for mTLS (env "+envControlTLSCert+")")
	fs.StringVar(&f.tlsFiles.KeyFile, "tls-key", f.tlsFiles.KeyFile, "PEM `file` of the key of --tls-cert (env "+envControlTLSKey+")")
	fs.StringVar(&f.tlsFiles.ServerName, "tls-server-name", f.tlsFiles.ServerName, "`name` the control plane's certificate is verified against (default: the --server host; env "+envControlTLSName+")")
}

// ctl is one run of `switchyard ctl`: its flags, its connection and where
// it writes.
type ctl struct {
	flags  ctlFlags
	getenv func(string) string
	stdout io.Writer
	stderr io.Writer
	now    func() time.Time

	// Set by connect.
	conn        *grpc.ClientConn
	client      switchyardv1.ControlServiceClient
	tokenSource string // where the token came from, for error hints; "" when none is sent
}

// runCtl runs `switchyard ctl`. It returns a usageError for bad flags, an
// error for a failed call or a cutover that rolled back or failed (exit
// code 1), and nil otherwise.
func runCtl(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c := &ctl{getenv: getenv, stdout: stdout, stderr: stderr, now: time.Now}
	c.flags = ctlFlags{server: defaultControlAddr, output: "text", timeout: 10 * time.Second}
	if s := strings.TrimSpace(getenv(envControlAddr)); s != "" {
		c.flags.server = s
	}
	c.flags.tlsFiles = tlsfiles.Files{
		CAFile:     strings.TrimSpace(getenv(envControlTLSCA)),
		CertFile:   strings.TrimSpace(getenv(envControlTLSCert)),
		KeyFile:    strings.TrimSpace(getenv(envControlTLSKey)),
		ServerName: strings.TrimSpace(getenv(envControlTLSName)),
	}
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ctlUsage); fs.PrintDefaults() }
	c.flags.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fs.Usage()
		return usageError{errors.New("no command given (cutover, sidecars, mirrors or clusters)")}
	}
	defer c.close()
	switch rest[0] {
	case "cutover", "cutovers":
		return c.runCutover(ctx, rest[1:])
	case "sidecars":
		return c.runSidecars(ctx, rest[1:])
	case "mirrors":
		return c.runMirrors(ctx, rest[1:])
	case "clusters":
		return c.runClusters(ctx, rest[1:])
	case "help":
		fs.SetOutput(stdout)
		fmt.Fprint(stdout, ctlUsage)
		fs.PrintDefaults()
		return nil
	default:
		return usageError{fmt.Errorf("unknown command %q (want cutover, sidecars, mirrors or clusters; see switchyard ctl --help)", rest[0])}
	}
}

// flagSet returns a command's flag set: its usage text, then its own and
// the global flags.
func (c *ctl) flagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	fs.Usage = func() {
		fmt.Fprint(c.stderr, usage)
		fmt.Fprintln(c.stderr, "\nFlags (with those of switchyard ctl):")
		fs.PrintDefaults()
	}
	c.flags.register(fs)
	return fs
}

// parseArgs parses fs's flags wherever they stand among the positional
// arguments (`cutover status ID --output json`), checks the global ones,
// and returns the positional arguments. A "--" ends the flags.
func (c *ctl) parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case c.flags.output != "text" && c.flags.output != "json":
		return nil, usageError{fmt.Errorf("--output %q: want text or json", c.flags.output)}
	case c.flags.timeout <= 0:
		return nil, usageError{fmt.Errorf("--timeout %s: must be positive", c.flags.timeout)}
	case c.flags.server == "":
		return nil, usageError{errors.New("--server: the control plane's host:port is required")}
	}
	return pos, nil
}

// wantArgs checks the number of positional arguments; names says what they
// are, for the message.
func wantArgs(pos []string, names ...string) error {
	switch {
	case len(pos) < len(names):
		return usageError{fmt.Errorf("missing %s", strings.Join(names[len(pos):], " "))}
	case len(pos) > len(names):
		return usageError{fmt.Errorf("unexpected argument %q", pos[len(names)])}
	}
	return nil
}

// noArgs parses a command that takes no positional argument, then
// connects.
func (c *ctl) noArgs(fs *flag.FlagSet, args []string) error {
	pos, err := c.parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos); err != nil {
		return err
	}
	return c.connect()
}

// connect reads the token and prepares the client. grpc.NewClient does not
// dial: the first call does, and fails fast with UNAVAILABLE when nothing
// listens.
func (c *ctl) connect() error {
	token, source, err := c.token()
	if err != nil {
		return usageError{err}
	}
	creds := insecure.NewCredentials()
	if c.flags.useTLS() {
		files := c.flags.tlsFiles
		if err := files.Validate(controlTLSFlagPrefix); err != nil {
			return usageError{err}
		}
		cfg, err := tlsfiles.ClientConfig(files.ForAddr(c.flags.server))
		if err != nil {
			return usageError{err}
		}
		creds = credentials.NewTLS(cfg)
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(token)))
		c.tokenSource = source
	}
	conn, err := grpc.NewClient(c.flags.server, opts...)
	if err != nil {
		return usageError{fmt.Errorf("--server %s: %w", c.flags.server, err)}
	}
	c.conn = conn
	c.client = switchyardv1.NewControlServiceClient(conn)
	return nil
}

func (c *ctl) close() {
	if c.conn != nil {
		_ = c.conn.Close()
	}
}

// token returns the bearer token and where it came from: --token-file
// (trimmed of whitespace), else SWITCHYARD_CONTROL_TOKEN, else none.
func (c *ctl) token() (token, source string, err error) {
	if c.flags.tokenFile != "" {
		raw, err := os.ReadFile(c.flags.tokenFile)
		if err != nil {
			return "", "", fmt.Errorf("--token-file: %w", err)
		}
		token = strings.TrimSpace(string(raw))
		if token == "" {
			return "", "", fmt.Errorf("--token-file %s is empty", c.flags.tokenFile)
		}
		return token, "--token-file " + c.flags.tokenFile, nil
	}
	if token = strings.TrimSpace(c.getenv(envControlToken)); token != "" {
		return token, envControlToken, nil
	}
	return "", "", nil
}

// bearerToken sends `authorization: Bearer <token>` with every call. It
// allows plaintext transport too, for control planes that serve without
// TLS (on loopback, or behind a TLS-terminating proxy).
type bearerToken string

func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

func (bearerToken) RequireTransportSecurity() bool { return false }

// callContext bounds one unary call by --timeout.
func (c *ctl) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.flags.timeout)
}

// rpcError is a failed call as people read it: "cutover abort:
// FAILED_PRECONDITION: <message>", with a hint where one helps. It unwraps
// to the gRPC status error.
type rpcError struct {
	text string
	err  error
}

func (e *rpcError) Error() string { return e.text }
func (e *rpcError) Unwrap() error { return e.err }

// rpcErr describes err, returned by the call op.
func (c *ctl) rpcErr(op string, err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%s: %w", op, err)
	}
	text := op + ": " + codeName(st.Code())
	if msg := st.Message(); msg != "" {
		text += ": " + msg
	}
	switch st.Code() {
	case codes.Unauthenticated:
		if c.tokenSource == "" {
			text += " (no token was sent: give the control plane's token with --token-file PATH or " + envControlToken + ")"
		} else {
			text += " (the token from " + c.tokenSource + " was refused: check --token-file or " + envControlToken + ")"
		}
	case codes.PermissionDenied:
		switch {
		case c.tokenSource != "":
			text += " (the token from " + c.tokenSource + " may not make this call)"
		case c.flags.tlsFiles.CertFile != "":
			text += " (the certificate from --tls-cert " + c.flags.tlsFiles.CertFile + " may not make this call)"
		}
	case codes.Unavailable:
		switch {
		case strings.Contains(st.Message(), "handshake"):
			text += " (TLS with " + c.flags.server + " failed: check --tls-ca, --tls-server-name and, for mTLS, --tls-cert and --tls-key)"
		case !c.flags.useTLS():
			text += " (is the control plane listening on " + c.flags.server + "? set --server or " + envControlAddr +
				"; if it serves TLS, give --tls-ca or --tls)"
		default:
			text += " (is the control plane listening on " + c.flags.server + "? set --server or " + envControlAddr + ")"
		}
	case codes.DeadlineExceeded:
		text += " (no answer within --timeout " + c.flags.timeout.String() + ")"
	}
	return &rpcError{text: text, err: err}
}

// codeName is the canonical name of a gRPC code, as in the gRPC spec and
// google.rpc.Code (Go's codes.Code.String says "FailedPrecondition").
func codeName(c codes.Code) string {
	names := [...]string{
		codes.OK:                 "OK",
		codes.Canceled:           "CANCELLED",
		codes.Unknown:            "UNKNOWN",
		codes.InvalidArgument:    "INVALID_ARGUMENT",
		codes.DeadlineExceeded:   "DEADLINE_EXCEEDED",
		codes.NotFound:           "NOT_FOUND",
		codes.AlreadyExists:      "ALREADY_EXISTS",
		codes.PermissionDenied:   "PERMISSION_DENIED",
		codes.ResourceExhausted:  "RESOURCE_EXHAUSTED",
		codes.FailedPrecondition: "FAILED_PRECONDITION",
		codes.Aborted:            "ABORTED",
		codes.OutOfRange:         "OUT_OF_RANGE",
		codes.Unimplemented:      "UNIMPLEMENTED",
		codes.Internal:           "INTERNAL",
		codes.Unavailable:        "UNAVAILABLE",
		codes.DataLoss:           "DATA_LOSS",
		codes.Unauthenticated:    "UNAUTHENTICATED",
	}
	if int(c) < len(names) {
		return names[c]
	}
	return c.String()
}

// printJSON writes m as protojson on one line, as the REST gateway writes
// it: lowerCamelCase names, every field present.
func (c *ctl) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	b = append(b, '\n')
	_, err = c.stdout.Write(b)
	return err
}

func (c *ctl) jsonOutput() bool { return c.flags.output == "json" }
