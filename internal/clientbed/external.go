package clientbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ErrNotInstalled is wrapped by Available's errors.
var ErrNotInstalled = errors.New("not installed (run `make deps`)")

// Available returns nil if client c can run on this machine: its binary,
// module, virtualenv, node_modules or jar is in place. The external clients
// are installed by `make deps`.
func Available(c Client) error {
	switch c {
	case FranzGo, Sarama:
		return nil
	case Kcat:
		if _, err := exec.LookPath("kcat"); err != nil {
			return fmt.Errorf("%s: kcat binary: %w", c, ErrNotInstalled)
		}
		return nil
	}
	dir, err := testclientsDir()
	if err != nil {
		return fmt.Errorf("%s: %w", c, err)
	}
	var need []string
	switch c {
	case ConfluentKafkaPython:
		need = []string{"python/.venv/bin/python", "python/.venv/lib/python3*/site-packages/confluent_kafka/__init__.py", "python/client.py"}
	case KafkaJS:
		if _, err := exec.LookPath("node"); err != nil {
			return fmt.Errorf("%s: node binary: %w", c, ErrNotInstalled)
		}
		need = []string{"node/node_modules/kafkajs/package.json", "node/client.js"}
	case Java:
		if _, err := exec.LookPath("java"); err != nil {
			return fmt.Errorf("%s: java binary: %w", c, ErrNotInstalled)
		}
		need = []string{"java/target/testclient.jar", "java/target/lib/kafka-clients-*.jar"}
	default:
		return fmt.Errorf("%s: unknown client", c)
	}
	for _, pattern := range need {
		m, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil || len(m) == 0 {
			return fmt.Errorf("%s: %s: %w", c, filepath.Join(dir, pattern), ErrNotInstalled)
		}
	}
	return nil
}

// testclientsDir finds the repository's testclients directory:
// $SWITCHYARD_TESTCLIENTS_DIR, else the nearest testclients/ above the
// working directory, else the one beside this source file.
func testclientsDir() (string, error) {
	if d := os.Getenv("SWITCHYARD_TESTCLIENTS_DIR"); d != "" {
		return d, nil
	}
	isDir := func(p string) bool {
		st, err := os.Stat(p)
		return err == nil && st.IsDir()
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			if isDir(filepath.Join(d, "testclients")) && isDir(filepath.Join(d, "internal", "clientbed")) {
				return filepath.Join(d, "testclients"), nil
			}
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Join(filepath.Dir(file), "..", "..", "testclients")
		if isDir(d) {
			return filepath.Clean(d), nil
		}
	}
	return "", errors.New("testclients directory not found (set SWITCHYARD_TESTCLIENTS_DIR)")
}

// programArgv is the command line that starts an external client program.
func programArgv(c Client, dir string) []string {
	switch c {
	case ConfluentKafkaPython:
		return []string{filepath.Join(dir, "python/.venv/bin/python"), filepath.Join(dir, "python/client.py")}
	case KafkaJS:
		return []string{"node", filepath.Join(dir, "node/client.js")}
	case Java:
		return []string{"java", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-jar", filepath.Join(dir, "java/target/testclient.jar")}
	}
	return nil
}

// runProgram runs an external client program and decodes its JSON report.
// The program bounds its own work by --timeout-ms; ctx (a little longer)
// kills it if it does not.
func runProgram(ctx context.Context, c Client, spec Spec) (Result, error) {
	dir, err := testclientsDir()
	if err != nil {
		return Result{}, err
	}
	argv := programArgv(c, dir)
	args := append(append([]string(nil), argv[1:]...),
		"--bootstrap", strings.Join(spec.Bootstrap, ","),
		"--topic", spec.Topic,
		"--records", strconv.Itoa(spec.Records),
		"--keys", strconv.Itoa(spec.Keys),
		"--mode", string(spec.Mode),
		"--timeout-ms", strconv.FormatInt(spec.Timeout.Milliseconds(), 10),
		"--prefix", spec.Prefix,
	)
	if spec.Mode.Consumes() {
		args = append(args, "--group", spec.Group)
	}
	var stdout bytes.Buffer
	stderr := newTail(64 << 10)
	cmd := exec.CommandContext(ctx, argv[0], args...)
	cmd.Dir = dir
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = 5 * time.Second
	runErr := cmd.Run()

	res := Result{Log: stderr.String()}
	// Exit status 1 means "ran, and reported errors": the report is still there.
	var exit *exec.ExitError
	if runErr != nil && !(errors.As(runErr, &exit) && exit.ExitCode() == 1) {
		return res, fmt.Errorf("%s: %w%s", strings.Join(argv, " "), runErr, stderrTail(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return res, fmt.Errorf("%s: decode report (%d bytes): %w%s", argv[0], stdout.Len(), err, stderrTail(stderr.String()))
	}
	res.Log = stderr.String()
	if res.Client != c {
		return res, fmt.Errorf("report names client %q", res.Client)
	}
	return res, nil
}

// stderrTail formats the end of a program's stderr for an error message.
func stderrTail(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return " (no stderr)"
	}
	const max = 4000
	if len(s) > max {
		s = "..." + s[len(s)-max:]
	}
	return "\nstderr:\n" + s
}

// tail is an io.Writer keeping the last max bytes written; safe for
// concurrent use.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTail(max int) *tail { return &tail{max: max} }

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
