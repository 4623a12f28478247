//go:build unix

package crashtest

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/switchyard/switchyard/internal/buildtest"
	"github.com/switchyard/switchyard/internal/childproc"
	"github.com/switchyard/switchyard/mirror"
)

// exitTimeout bounds how long a signalled control plane may take to exit.
const exitTimeout = 15 * time.Second

// buildSwitchyard builds the switchyard binary from this module, unless
// -crashtest.bin names one.
func buildSwitchyard(t *testing.T) string { return buildtest.Switchyard(t, *flagBin) }

// controlYAML is the file `switchyard control --config` reads (see its
// --help).
type controlYAML struct {
	Listen    string        `yaml:"listen"`
	TokenFile string        `yaml:"tokenFile"`
	StoreDir  string        `yaml:"storeDir"`
	Clusters  []clusterYAML `yaml:"clusters"`
	Mirrors   []mirrorYAML  `yaml:"mirrors"`
}

type clusterYAML struct {
	Name      string   `yaml:"name"`
	Bootstrap []string `yaml:"bootstrap"`
}

type mirrorYAML struct {
	mirror.Config `yaml:",inline"`
	Source        string `yaml:"source"`
	Target        string `yaml:"target"`
}

// controlPlane is a `switchyard control` process that is killed and
// started again on the same configuration, store and port.
type controlPlane struct {
	bin, dir, cfgPath, storeDir, addr string
	runs                              []*cpRun
}

// cpRun is one run of the process.
type cpRun struct {
	n       int
	cmd     *exec.Cmd
	logPath string
	started time.Time
	exited  chan struct{}
	waitErr error // set before exited is closed
}

// newControlPlane writes control.yaml (a free loopback port, the token
// file, a store directory) for the clusters and mirror given.
func newControlPlane(t *testing.T, bin, token string, clusters []clusterYAML, m mirrorYAML) *controlPlane {
	t.Helper()
	dir := t.TempDir()
	cp := &controlPlane{bin: bin, dir: dir, cfgPath: filepath.Join(dir, "control.yaml"), storeDir: filepath.Join(dir, "store")}
	cp.addr = freeAddr(t)
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("mirror config: %v", err)
	}
	b, err := yaml.Marshal(controlYAML{Listen: cp.addr, TokenFile: tokenFile, StoreDir: cp.storeDir, Clusters: clusters, Mirrors: []mirrorYAML{m}})
	if err != nil {
		t.Fatalf("control.yaml: %v", err)
	}
	if err := os.WriteFile(cp.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("control.yaml:\n%s", b)
		t.Logf("the store at the end:\n%s", dumpDir(cp.storeDir))
		for _, r := range cp.runs {
			t.Logf("---- control plane run %d (pid %d, %v) ----\n%s", r.n, r.cmd.Process.Pid, r.state(), tail(r.logPath, 48<<10))
		}
	})
	return cp
}

// freeAddr returns a free loopback address for the control plane, its
// port below the kernel's ephemeral range (and below the test bed's
// brokers, 20000 on): the process binds it at every start, and a port
// from the ephemeral range could be taken in between by any listener on
// port 0 or outgoing connection — of the parallel scenarios' proxies, of
// other processes — as one was, failing a setup with "bind: address
// already in use" (a sidecar's proxy answered the gRPC client).
func freeAddr(t *testing.T) string {
	t.Helper()
	lo, hi := 10000, 20000
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if elo, err := strconv.Atoi(f[0]); err == nil && elo-1 < hi {
				hi = elo - 1
			}
		}
	}
	for range 1000 {
		port := 0 // no room below the ephemeral range: the kernel chooses
		if hi > lo {
			port = lo + rand.IntN(hi-lo)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		ln.Close()
		return addr
	}
	t.Fatal("pick a port for the control plane: none free below the ephemeral range")
	return ""
}

// start starts a new run of the process; it does not wait for it to serve.
func (cp *controlPlane) start(t *testing.T) *cpRun {
	t.Helper()
	r := &cpRun{n: len(cp.runs) + 1, exited: make(chan struct{})}
	r.logPath = filepath.Join(cp.dir, fmt.Sprintf("control-%d.log", r.n))
	f, err := os.Create(r.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor
	r.cmd = exec.Command(cp.bin, "control", "--config", cp.cfgPath, "--log-format", "console", "--log-level", "info")
	r.cmd.Stdout, r.cmd.Stderr = f, f
	childproc.DieWithParent(r.cmd)
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("control plane run %d: start %s: %v", r.n, cp.bin, err)
	}
	r.started = time.Now()
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	cp.runs = append(cp.runs, r)
	t.Cleanup(r.ensureStopped)
	return r
}

// cur is the newest run.
func (cp *controlPlane) cur() *cpRun { return cp.runs[len(cp.runs)-1] }

// ensureStopped kills the process if it still runs.
func (r *cpRun) ensureStopped() {
	select {
	case <-r.exited:
	default:
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
}

func (r *cpRun) alive() bool {
	select {
	case <-r.exited:
		return false
	default:
		return true
	}
}

func (r *cpRun) state() string {
	if r.alive() {
		return "running"
	}
	return fmt.Sprintf("exited: %v", r.waitErr)
}

// kill sends SIGKILL and waits for the process to be gone; it fails if the
// process had exited on its own.
func (r *cpRun) kill() error {
	if err := syscall.Kill(r.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		return fmt.Errorf("run %d: SIGKILL: %w", r.n, err)
	}
	if err := r.awaitExit(); err != nil {
		return err
	}
	var ee *exec.ExitError
	if !errors.As(r.waitErr, &ee) || !signaled(ee, syscall.SIGKILL) {
		return fmt.Errorf("run %d: the control plane exited by itself before it was killed: %v", r.n, r.waitErr)
	}
	return nil
}

// terminate sends SIGTERM and expects a clean exit (status 0).
func (r *cpRun) terminate() error {
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		if errors.Is(err, os.ErrProcessDone) {
			<-r.exited
			return fmt.Errorf("run %d: the control plane exited by itself before SIGTERM: %v", r.n, r.waitErr)
		}
		return fmt.Errorf("run %d: SIGTERM: %w", r.n, err)
	}
	if err := r.awaitExit(); err != nil {
		return err
	}
	if r.waitErr != nil {
		return fmt.Errorf("run %d: after SIGTERM the control plane exited with %v, want status 0", r.n, r.waitErr)
	}
	return nil
}

func (r *cpRun) awaitExit() error {
	timer := time.NewTimer(exitTimeout)
	defer timer.Stop()
	select {
	case <-r.exited:
		return nil
	case <-timer.C:
		_ = r.cmd.Process.Kill()
		<-r.exited
		return fmt.Errorf("run %d: the control plane had not exited %v after the signal", r.n, exitTimeout)
	}
}

func signaled(ee *exec.ExitError, sig syscall.Signal) bool {
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// dumpDir returns every file under dir with its contents.
func dumpDir(dir string) string {
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		fmt.Fprintf(&b, "--- %s\n%s\n", rel, data)
		return nil
	})
	if err != nil {
		fmt.Fprintf(&b, "(%v)\n", err)
	}
	return b.String()
}

// tail returns the last n bytes of a file.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	off := max(0, st.Size()-n)
	b := make([]byte, st.Size()-off)
	if _, err := f.ReadAt(b, off); err != nil {
		return err.Error()
	}
	if off > 0 {
		return fmt.Sprintf("[... %d bytes before]\n%s", off, b)
	}
	return string(b)
}
