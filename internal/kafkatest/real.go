package kafkatest

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EnvFileVar names a variable that points at the test bed's env file, for a
// test bed started with another STATE_DIR. By default the file is
// testbed/.state/env in the repository root.
const EnvFileVar = "SWITCHYARD_TEST_ENV_FILE"

const modulePath = "github.com/switchyard/switchyard"

// realPair returns the clusters of the real-Kafka test bed. Their bootstrap
// addresses come from SWITCHYARD_TEST_SOURCE and SWITCHYARD_TEST_TARGET
// (comma-separated host:port lists) or, when those are unset, from the env
// file `make kafka-up` writes, so a plain
//
//	SWITCHYARD_TEST_KAFKA=real go test ./...
//
// works after `make kafka-up` without sourcing anything.
func realPair(t testing.TB) (source, target *Cluster) {
	t.Helper()
	src := Env("SWITCHYARD_TEST_SOURCE")
	dst := Env("SWITCHYARD_TEST_TARGET")
	if src == "" || dst == "" {
		t.Fatalf("SWITCHYARD_TEST_KAFKA=real needs SWITCHYARD_TEST_SOURCE and SWITCHYARD_TEST_TARGET, "+
			"from the environment or from %s (run `make kafka-up`)", envFileForMessage())
	}
	source = &Cluster{Name: "source", Bootstrap: splitAddrs(src)}
	target = &Cluster{Name: "target", Bootstrap: splitAddrs(dst)}
	for _, c := range []*Cluster{source, target} {
		if err := reachable(c.Bootstrap); err != nil {
			t.Fatalf("real Kafka %s cluster at %s does not answer (%v): is the test bed up? "+
				"(`make kafka-up`; `make kafka-status` tells what runs)", c.Name, strings.Join(c.Bootstrap, ","), err)
		}
	}
	return source, target
}

// Env returns a setting of the real-Kafka test bed: the environment variable
// key if it is set and not empty, otherwise its value in the env file written
// by `make kafka-up` (testbed/.state/env, or the file named by
// SWITCHYARD_TEST_ENV_FILE), otherwise "". Besides the bootstrap lists, the
// file names the Kafka version (SWITCHYARD_TEST_KAFKA_VERSION) and, after
// `make kafka-up-secure`, the SASL_SSL listeners, users and CA
// (SWITCHYARD_TEST_SOURCE_SASL_SSL, SWITCHYARD_TEST_SASL_USER,
// SWITCHYARD_TEST_CA_PEM, ...; see testbed/README.md).
func Env(key string) string {
	if v := strings.TrimSpace(os.Getenv(key)); v != "" {
		return v
	}
	path := EnvFile()
	if path == "" {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return parseEnvFile(b)[key]
}

// EnvFile returns the path of the test bed's env file: SWITCHYARD_TEST_ENV_FILE,
// or testbed/.state/env in the repository root found by walking up from the
// working directory to this module's go.mod. It returns "" if neither is
// known; the file need not exist.
func EnvFile() string {
	if p := strings.TrimSpace(os.Getenv(EnvFileVar)); p != "" {
		return p
	}
	root := repoRoot()
	if root == "" {
		return ""
	}
	return filepath.Join(root, "testbed", ".state", "env")
}

func envFileForMessage() string {
	if p := EnvFile(); p != "" {
		return p
	}
	return "testbed/.state/env"
}

// repoRoot walks up from the working directory to the directory whose go.mod
// declares this module (so a nested module does not stop the walk).
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	first := ""
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil {
			if first == "" {
				first = dir
			}
			if declaresModule(b, modulePath) {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return first
		}
		dir = parent
	}
}

func declaresModule(gomod []byte, path string) bool {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == path
		}
	}
	return false
}

// parseEnvFile reads `export KEY=VALUE` (or `KEY=VALUE`) lines; comments and
// other lines are ignored, and single or double quotes around a value are
// removed.
func parseEnvFile(b []byte) map[string]string {
	out := make(map[string]string)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimSpace(strings.TrimPrefix(line, "export "))
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t") {
			continue
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			if v[0] == '"' {
				if uq, err := strconv.Unquote(v); err == nil {
					v = uq
				} else {
					v = v[1 : len(v)-1]
				}
			} else {
				v = v[1 : len(v)-1]
			}
		}
		out[k] = v
	}
	return out
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// reachable reports whether any of the addresses accepts a TCP connection,
// so that a test bed that is down fails a test at once with a clear message
// instead of a client timeout.
func reachable(addrs []string) error {
	var last error
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 3*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		last = err
	}
	return last
}
