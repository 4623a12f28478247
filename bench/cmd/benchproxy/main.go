// Command benchproxy measures what the Switchyard proxy costs, in one run:
// throughput direct to a cluster and through the proxy, the proxy's CPU
// seconds per GB forwarded, its RSS idle and at peak, and the latency it
// adds to a synchronous produce. It prints a Markdown report.
//
// Unless -bootstrap names a running cluster, it starts a three-broker kfake
// cluster in a process of its own (bin/fakecluster), so the cluster's CPU is
// not counted against the proxy. It starts `switchyard proxy` as another
// process, waits for GET /readyz, reads its idle RSS from /proc, then runs
// bin/proxybench -runs times direct and -runs times through the proxy,
// alternating which goes first, one process per phase so the proxy's CPU
// time (/proc/PID/stat utime+stime) is read around each phase. Medians are
// reported. Every process it starts is stopped when it returns, also on an
// error or a signal; the children are also told to die with it.
//
//	benchproxy -mb 1024 -runs 5                    # kfake
//	benchproxy -bootstrap 127.0.0.1:9092 -mb 512   # a running cluster
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/switchyard/switchyard/internal/childproc"
)

type config struct {
	switchyard, proxybench, fakecluster string
	bootstrap                           string
	kfakeMaxVersions                    string
	mib, warmupMiB                      int
	runs                                int
	partitions, replication             int
	recordBytes                         int
	latencySamples                      int
	out, jsonOut                        string
	logDir                              string
	perfOut                             string
	idleConns                           int
	producers, producerWorkers          int
	proxyArgs                           string
}

func main() {
	var c config
	flag.StringVar(&c.switchyard, "switchyard", "bin/switchyard", "switchyard binary")
	flag.StringVar(&c.proxybench, "proxybench", "bin/proxybench", "proxybench binary")
	flag.StringVar(&c.fakecluster, "fakecluster", "bin/fakecluster", "fakecluster binary (unless -bootstrap)")
	flag.StringVar(&c.bootstrap, "bootstrap", "", "host:port,... of a running cluster; empty starts a 3-broker kfake cluster")
	flag.StringVar(&c.kfakeMaxVersions, "kfake-max-versions", "", "key=version,... caps for the kfake cluster's API versions, e.g. 0=12 to forward Produce v12 (no topic ids)")
	flag.IntVar(&c.mib, "mb", 1024, "MiB produced (and then consumed) per run")
	flag.IntVar(&c.warmupMiB, "warmup-mb", 64, "MiB per unmeasured warm-up run, direct and proxied (0: none)")
	flag.IntVar(&c.runs, "runs", 5, "measured runs per mode (direct, proxied), alternating")
	flag.IntVar(&c.partitions, "partitions", 6, "partitions per benchmark topic")
	flag.IntVar(&c.replication, "replication", 1, "replication factor of the benchmark topics")
	flag.IntVar(&c.recordBytes, "record-bytes", 1024, "bytes per record")
	flag.IntVar(&c.latencySamples, "latency-samples", 5000, "ProduceSync samples per latency phase")
	flag.StringVar(&c.out, "out", "", "also write the Markdown report here")
	flag.StringVar(&c.jsonOut, "json", "", "also write every measurement as JSON here")
	flag.StringVar(&c.logDir, "log-dir", "", "where the proxy's and cluster's logs go (default: a temporary directory, removed on success)")
	flag.StringVar(&c.perfOut, "perf", "", "record a CPU profile of the proxy process with Linux perf (perf record -g -p PID) over the measured runs into this file")
	flag.IntVar(&c.idleConns, "idle-conns", 0, "instead of the throughput runs, open this many client connections, leave them idle and report the proxy's RSS")
	flag.IntVar(&c.producers, "producers", 0, "instead of the throughput runs, run this many short-lived idempotent producers through the proxy and report its RSS (fails above twice the idle RSS)")
	flag.IntVar(&c.producerWorkers, "producer-workers", 16, "connections the -producers run uses at once")
	flag.StringVar(&c.proxyArgs, "proxy-args", "", "extra space-separated arguments for `switchyard proxy`, e.g. --max-producer-ids=50000")
	flag.Parse()
	if c.runs < 1 || c.mib < 1 {
		fmt.Fprintln(os.Stderr, "benchproxy: -runs and -mb must be positive")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, c)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchproxy:", err)
		os.Exit(1)
	}
}

// child is a process this program started and must stop.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done
}

func start(name string, cmd *exec.Cmd) (*child, error) {
	childproc.DieWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { ch.err = cmd.Wait(); close(ch.done) }()
	return ch, nil
}

// stop asks the process to exit, and kills it if it has not within 5 s.
func (ch *child) stop() { ch.stopWith(syscall.SIGTERM) }

func (ch *child) stopWith(sig os.Signal) {
	select {
	case <-ch.done:
		return
	default:
	}
	_ = ch.cmd.Process.Signal(sig)
	select {
	case <-ch.done:
	case <-time.After(5 * time.Second):
		_ = ch.cmd.Process.Kill()
		<-ch.done
	}
}

func (ch *child) pid() int { return ch.cmd.Process.Pid }

// Phase is one measured produce or consume phase.
type Phase struct {
	MBps        float64 `json:"mb_per_s"`
	Seconds     float64 `json:"seconds"`
	Bytes       int64   `json:"bytes"`
	ProxyCPU    float64 `json:"proxy_cpu_s"`
	ClientCPU   float64 `json:"client_cpu_s"`
	ClusterCPU  float64 `json:"cluster_cpu_s"`             // -1 when the cluster is not ours
	ProxyWireB  float64 `json:"proxy_wire_bytes"`          // request+response bytes the proxy counted (proxied runs)
	ProxyRSSEnd int64   `json:"proxy_rss_after,omitempty"` // VmRSS after the phase
}

// Latency is proxybench's latency result.
type Latency struct {
	Samples int     `json:"samples"`
	P50     float64 `json:"p50_ms"`
	P90     float64 `json:"p90_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
	Mean    float64 `json:"mean_ms"`
}

// Run is one direct or proxied run.
type Run struct {
	Mode    string  `json:"mode"`
	Index   int     `json:"index"`
	Produce Phase   `json:"produce"`
	Consume Phase   `json:"consume"`
	Latency Latency `json:"latency"`
}

// Report is everything measured.
type Report struct {
	Started       time.Time `json:"started"`
	Machine       Machine   `json:"machine"`
	Cluster       string    `json:"cluster"`
	Bootstrap     string    `json:"bootstrap"`
	ProxyListen   string    `json:"proxy_listen"`
	MiBPerRun     int       `json:"mib_per_run"`
	RecordBytes   int       `json:"record_bytes"`
	Partitions    int       `json:"partitions"`
	Replication   int       `json:"replication"`
	IdleRSS       int64     `json:"proxy_idle_rss_bytes"`
	IdleRSSAnon   int64     `json:"proxy_idle_rss_anon_bytes"`
	IdleRSSFile   int64     `json:"proxy_idle_rss_file_bytes"`
	EndRSS        int64     `json:"proxy_rss_after_bytes"`
	PeakRSS       int64     `json:"proxy_peak_rss_bytes"`
	IdleCPUDirect float64   `json:"proxy_cpu_s_during_direct_runs"`
	LoadBefore    string    `json:"loadavg_before"`
	LoadAfter     string    `json:"loadavg_after"`
	Runs          []Run     `json:"runs"`
}

// Machine describes where the numbers come from.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	GoVersion string `json:"go_version"`
	Kernel    string `json:"kernel"`
}

func run(ctx context.Context, c config) (err error) {
	for _, b := range []string{c.switchyard, c.proxybench} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (build it first: make bench-proxy does)", err)
		}
	}
	logDir := c.logDir
	if logDir == "" {
		if logDir, err = os.MkdirTemp("", "benchproxy-"); err != nil {
			return err
		}
		defer func() {
			if err == nil {
				os.RemoveAll(logDir)
			} else {
				fmt.Fprintf(os.Stderr, "benchproxy: logs kept in %s\n", logDir)
			}
		}()
	} else if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}

	var children []*child
	defer func() {
		for i := len(children) - 1; i >= 0; i-- {
			children[i].stop()
		}
	}()

	rep := Report{
		Started: time.Now().UTC(), Machine: machine(),
		MiBPerRun: c.mib, RecordBytes: c.recordBytes, Partitions: c.partitions, Replication: c.replication,
		LoadBefore: loadavg(),
	}
	clusterPID := -1
	bootstrap := c.bootstrap
	if bootstrap == "" {
		fc, addrs, err := startFakeCluster(ctx, c.fakecluster, c.kfakeMaxVersions, logDir)
		if fc != nil {
			children = append(children, fc)
		}
		if err != nil {
			return err
		}
		bootstrap, clusterPID = addrs, fc.pid()
		rep.Cluster = "kfake, 3 brokers, in its own process (bin/fakecluster)"
		if c.kfakeMaxVersions != "" {
			rep.Cluster += ", API versions capped at " + c.kfakeMaxVersions + " (key=version)"
		}
	} else {
		if err := reachable(bootstrap); err != nil {
			return err
		}
		rep.Cluster = "running cluster given with -bootstrap"
	}
	rep.Bootstrap = bootstrap
	nBrokers := len(strings.Split(bootstrap, ","))

	proxyArgs := strings.Fields(c.proxyArgs)
	listen, err := freePortBlock(1 + max(nBrokers, 3) + 2)
	if err != nil {
		// Ports held in TIME_WAIT by other work on the machine: give each
		// virtual broker its own loopback address on one port instead.
		if listen, err = freePortOn(brokerAddrBase); err != nil {
			return err
		}
		proxyArgs = append(proxyArgs, "--broker-address-base", brokerAddrBase)
		fmt.Fprintf(os.Stderr, "benchproxy: no block of free ports on 127.0.0.1; virtual brokers on %s.. at %s's port\n", brokerAddrBase, listen)
	}
	adminAddr, err := freePortBlock(1)
	if err != nil {
		return err
	}
	rep.ProxyListen = listen
	px, err := startProxy(ctx, c.switchyard, bootstrap, listen, adminAddr, logDir, proxyArgs...)
	if px != nil {
		children = append(children, px)
	}
	if err != nil {
		return err
	}
	if rep.IdleRSS, _, err = procMem(px.pid()); err != nil {
		return err
	}
	if st, err := procStatus(px.pid()); err == nil {
		rep.IdleRSSAnon, rep.IdleRSSFile = st["RssAnon"], st["RssFile"]
	}
	fmt.Fprintf(os.Stderr, "benchproxy: proxy ready on %s (pid %d), idle RSS %.1f MiB; cluster %s\n",
		listen, px.pid(), mib(rep.IdleRSS), bootstrap)

	if c.idleConns > 0 {
		report, err := idleConns(px.pid(), listen, c.idleConns)
		if err == nil && c.out != "" {
			err = os.WriteFile(c.out, []byte(report), 0o644)
		}
		return err
	}
	if c.producers > 0 {
		args := ""
		if c.proxyArgs != "" {
			args = " " + c.proxyArgs
		}
		report, err := shortLivedProducers(ctx, px.pid(), listen, "http://"+adminAddr+"/metrics", c.producers, max(c.producerWorkers, 1), args)
		if report != "" && c.out != "" {
			if werr := os.WriteFile(c.out, []byte(report), 0o644); err == nil {
				err = werr
			}
		}
		return err
	}

	b := &bencher{c: c, ticks: clockTicks(), proxyPID: px.pid(), clusterPID: clusterPID,
		metricsURL: "http://" + adminAddr + "/metrics", direct: bootstrap, proxied: listen}

	if c.warmupMiB > 0 {
		for _, mode := range []string{"direct", "proxied"} {
			fmt.Fprintf(os.Stderr, "benchproxy: warm-up %s, %d MiB\n", mode, c.warmupMiB)
			if _, err := b.run(ctx, mode, -1, c.warmupMiB); err != nil {
				return fmt.Errorf("warm-up %s: %w", mode, err)
			}
		}
	}
	var perf *child
	if c.perfOut != "" {
		pf, err := startPerf(c.perfOut, px.pid(), logDir)
		if err != nil {
			return err
		}
		// Stopped (SIGINT, which makes perf write its file) before the
		// proxy: deferred calls run last-in first-out.
		defer pf.stopWith(os.Interrupt)
		perf = pf
	}
	for i := 0; i < c.runs; i++ {
		order := []string{"direct", "proxied"}
		if i%2 == 1 {
			order = []string{"proxied", "direct"}
		}
		for _, mode := range order {
			fmt.Fprintf(os.Stderr, "benchproxy: run %d/%d %s, %d MiB\n", i+1, c.runs, mode, c.mib)
			r, err := b.run(ctx, mode, i, c.mib)
			if err != nil {
				return fmt.Errorf("run %d %s: %w", i+1, mode, err)
			}
			fmt.Fprintf(os.Stderr, "benchproxy:   produce %.0f MB/s, consume %.0f MB/s, p50 %.3f ms, p99 %.3f ms, proxy CPU %.2f s\n",
				r.Produce.MBps, r.Consume.MBps, r.Latency.P50, r.Latency.P99, r.Produce.ProxyCPU+r.Consume.ProxyCPU)
			rep.Runs = append(rep.Runs, r)
		}
	}
	if perf != nil {
		select {
		case <-perf.done:
			return fmt.Errorf("perf record exited during the runs: %v (log: %s)", perf.err, filepath.Join(logDir, "perf.log"))
		default:
		}
	}
	if rep.EndRSS, rep.PeakRSS, err = procMem(px.pid()); err != nil {
		return err
	}
	rep.IdleCPUDirect = b.cpuDuringDirect
	rep.LoadAfter = loadavg()

	md := markdown(rep)
	fmt.Print(md)
	if c.out != "" {
		if err := os.WriteFile(c.out, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if c.jsonOut != "" {
		j, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(c.jsonOut, append(j, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// startPerf attaches `perf record` to the proxy. Read the profile with
// perf report -i FILE --no-children --sort symbol.
func startPerf(out string, pid int, logDir string) (*child, error) {
	logf, err := os.Create(filepath.Join(logDir, "perf.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command("perf", "record", "-F", "499", "-g", "-o", out, "-p", strconv.Itoa(pid))
	cmd.Stdout, cmd.Stderr = logf, logf
	return start("perf", cmd)
}

// startFakeCluster starts bin/fakecluster and reads the addresses it prints.
// Its standard input is a pipe held by this process: the cluster exits
// when this process does, however it ends.
func startFakeCluster(ctx context.Context, bin, maxVersions, logDir string) (*child, string, error) {
	args := []string{"-brokers", "3", "-exit-on-stdin-eof"}
	if maxVersions != "" {
		args = append(args, "-max-versions", maxVersions)
	}
	cmd := exec.Command(bin, args...)
	if _, err := cmd.StdinPipe(); err != nil {
		return nil, "", err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(logDir, "fakecluster.log"))
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = logf
	ch, err := start("fakecluster", cmd)
	logf.Close()
	if err != nil {
		return nil, "", err
	}
	type hello struct {
		Bootstrap string `json:"bootstrap"`
	}
	got := make(chan hello, 1)
	go func() {
		var h hello
		line, err := bufio.NewReader(stdout).ReadBytes('\n')
		if err == nil && json.Unmarshal(line, &h) == nil {
			got <- h
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	select {
	case h := <-got:
		return ch, h.Bootstrap, nil
	case <-ch.done:
		return ch, "", fmt.Errorf("fakecluster exited: %v (log: %s)", ch.err, logf.Name())
	case <-time.After(30 * time.Second):
		return ch, "", errors.New("fakecluster printed no addresses within 30s")
	case <-ctx.Done():
		return ch, "", ctx.Err()
	}
}

// reachable fails unless at least one seed broker accepts a connection.
func reachable(bootstrap string) error {
	var errs []error
	for _, a := range strings.Split(bootstrap, ",") {
		c, err := net.DialTimeout("tcp", a, 2*time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		errs = append(errs, err)
	}
	return fmt.Errorf("no broker of %s accepts connections (is the cluster up? for the test bed: make kafka-up): %w", bootstrap, errors.Join(errs...))
}

// brokerAddrBase is where virtual brokers get their own loopback addresses
// when no block of free ports is found (freePortOn).
const brokerAddrBase = "127.0.77.1"

// freePortOn returns host:port for a port free on host and on the next
// few addresses after it (the virtual brokers' with --broker-address-base;
// nothing else uses them). The bootstrap listener takes host itself.
func freePortOn(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	ip := net.ParseIP(host).To4()
	bootstrap := net.IPv4(ip[0], ip[1], ip[2], ip[3]-1)
	return net.JoinHostPort(bootstrap.String(), strconv.Itoa(l.Addr().(*net.TCPAddr).Port)), nil
}

// freePortBlock finds n consecutive free loopback ports and returns the
// first as host:port. The proxy's virtual broker N listens on the port
// after --listen's plus N, so the block leaves room for them.
func freePortBlock(n int) (string, error) {
	for attempt := 0; attempt < 50; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", err
		}
		base := l.Addr().(*net.TCPAddr).Port
		held := []net.Listener{l}
		ok := base+n-1 <= 65535
		for p := base + 1; ok && p < base+n; p++ {
			l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			held = append(held, l2)
		}
		for _, h := range held {
			h.Close()
		}
		if ok {
			return net.JoinHostPort("127.0.0.1", strconv.Itoa(base)), nil
		}
	}
	return "", fmt.Errorf("no block of %d free loopback ports", n)
}

// startProxy starts `switchyard proxy` (with extra arguments) and polls
// GET /readyz until it answers 200.
func startProxy(ctx context.Context, bin, bootstrap, listen, adminAddr, logDir string, extra ...string) (*child, error) {
	logPath := filepath.Join(logDir, "switchyard.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"proxy",
		"--cluster", "source=" + bootstrap, "--active", "source",
		"--listen", listen, "--admin", adminAddr, "--log-level", "warn"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	ch, err := start("switchyard", cmd)
	logf.Close()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	last := "no answer"
	for {
		resp, err := hc.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return ch, nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return ch, fmt.Errorf("proxy not ready within 30s: %s (log: %s)", last, logPath)
		}
		select {
		case <-ch.done:
			return ch, fmt.Errorf("proxy exited: %v (log: %s)", ch.err, logPath)
		case <-ctx.Done():
			return ch, ctx.Err()
		case <-tick.C:
		}
	}
}

// bencher runs proxybench phases and reads the processes' counters around
// them.
type bencher struct {
	c               config
	ticks           float64
	proxyPID        int
	clusterPID      int
	metricsURL      string
	direct, proxied string
	cpuDuringDirect float64
	topicSeq        int
}

type benchOut struct {
	Produce *struct {
		Bytes   int64   `json:"bytes"`
		Seconds float64 `json:"seconds"`
		MBps    float64 `json:"mb_per_s"`
	} `json:"produce"`
	Consume *struct {
		Bytes   int64   `json:"bytes"`
		Seconds float64 `json:"seconds"`
		MBps    float64 `json:"mb_per_s"`
	} `json:"consume"`
	Latency *Latency `json:"latency"`
}

// run is one run: create the topic (direct), produce, consume and latency
// (through mode's address), delete the topic (direct).
func (b *bencher) run(ctx context.Context, mode string, idx, mibs int) (Run, error) {
	r := Run{Mode: mode, Index: idx}
	addr := b.direct
	if mode == "proxied" {
		addr = b.proxied
	}
	b.topicSeq++
	topic := fmt.Sprintf("bench-%s-%d-%d", mode, b.topicSeq, time.Now().UnixNano())
	if _, _, err := b.bench(ctx, b.direct, topic, "create", mibs); err != nil {
		return r, err
	}
	defer func() {
		if ctx.Err() == nil { // frees the cluster's memory for the next run
			_, _, _ = b.bench(ctx, b.direct, topic, "delete", mibs)
		}
	}()
	for _, ph := range []string{"produce", "consume"} {
		p, err := b.measured(ctx, mode, addr, topic, ph, mibs)
		if err != nil {
			return r, err
		}
		if ph == "produce" {
			r.Produce = p
		} else {
			r.Consume = p
		}
	}
	out, _, err := b.bench(ctx, addr, topic, "latency", mibs)
	if err != nil {
		return r, err
	}
	if out.Latency == nil {
		return r, errors.New("latency: no result")
	}
	r.Latency = *out.Latency
	return r, nil
}

// measured runs one produce or consume phase and reads the proxy's and the
// cluster's CPU time, and the proxy's byte counters, around it.
func (b *bencher) measured(ctx context.Context, mode, addr, topic, phase string, mibs int) (Phase, error) {
	var p Phase
	pc0, err := procCPU(b.proxyPID)
	if err != nil {
		return p, err
	}
	cc0 := int64(-1)
	if b.clusterPID > 0 {
		if cc0, err = procCPU(b.clusterPID); err != nil {
			return p, err
		}
	}
	w0, err := b.wireBytes()
	if err != nil {
		return p, err
	}
	out, clientCPU, err := b.bench(ctx, addr, topic, phase, mibs)
	if err != nil {
		return p, err
	}
	pc1, err := procCPU(b.proxyPID)
	if err != nil {
		return p, err
	}
	p.ProxyCPU = float64(pc1-pc0) / b.ticks
	p.ClusterCPU = -1
	if cc0 >= 0 {
		cc1, err := procCPU(b.clusterPID)
		if err != nil {
			return p, err
		}
		p.ClusterCPU = float64(cc1-cc0) / b.ticks
	}
	w1, err := b.wireBytes()
	if err != nil {
		return p, err
	}
	p.ProxyWireB = w1 - w0
	p.ClientCPU = clientCPU
	if p.ProxyRSSEnd, _, err = procMem(b.proxyPID); err != nil {
		return p, err
	}
	if mode == "direct" {
		b.cpuDuringDirect += p.ProxyCPU
	}
	switch {
	case phase == "produce" && out.Produce != nil:
		p.Bytes, p.Seconds, p.MBps = out.Produce.Bytes, out.Produce.Seconds, out.Produce.MBps
	case phase == "consume" && out.Consume != nil:
		p.Bytes, p.Seconds, p.MBps = out.Consume.Bytes, out.Consume.Seconds, out.Consume.MBps
	default:
		return p, fmt.Errorf("%s: no result", phase)
	}
	return p, nil
}

// bench runs one proxybench phase and returns its result and CPU seconds.
func (b *bencher) bench(ctx context.Context, addr, topic, phase string, mibs int) (benchOut, float64, error) {
	var out benchOut
	cmd := exec.CommandContext(ctx, b.c.proxybench,
		"-bootstrap", addr, "-topic", topic, "-phases", phase,
		"-mb", strconv.Itoa(mibs), "-record-bytes", strconv.Itoa(b.c.recordBytes),
		"-partitions", strconv.Itoa(b.c.partitions), "-replication", strconv.Itoa(b.c.replication),
		"-latency-samples", strconv.Itoa(b.c.latencySamples))
	childproc.DieWithParent(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return out, 0, fmt.Errorf("proxybench %s: %w", phase, ctx.Err())
		}
		return out, 0, fmt.Errorf("proxybench %s against %s: %w: %s", phase, addr, err, bytes.TrimSpace(stderr.Bytes()))
	}
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return out, 0, fmt.Errorf("proxybench %s: output: %w", phase, err)
	}
	return out, cpu, nil
}

// wireBytes sums the proxy's request and response byte counters, all API
// keys, from its /metrics.
func (b *bencher) wireBytes() (float64, error) {
	resp, err := http.Get(b.metricsURL)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "switchyard_proxy_request_bytes_total{") &&
			!strings.HasPrefix(line, "switchyard_proxy_response_bytes_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics: %q: %w", line, err)
		}
		sum += v
	}
	return sum, sc.Err()
}

// loadavg is the 1, 5 and 15 minute load averages: other work on a shared
// machine shows up here, and in the spread of the runs.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "n/a"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "n/a"
	}
	return strings.Join(f[:3], " ")
}

func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("go", "version").Output(); err == nil {
		m.GoVersion = strings.TrimSpace(string(out))
	}
	return m
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func pick(rs []Run, mode string, f func(Run) float64) []float64 {
	var xs []float64
	for _, r := range rs {
		if r.Mode == mode {
			xs = append(xs, f(r))
		}
	}
	return xs
}

// pairRatios is proxied/direct for each run index: the two modes of one
// index ran back to back, so machine-wide drift mostly cancels.
func pairRatios(rs []Run, f func(Run) float64) []float64 {
	direct := map[int]float64{}
	for _, r := range rs {
		if r.Mode == "direct" {
			direct[r.Index] = f(r)
		}
	}
	var out []float64
	for _, r := range rs {
		if d, ok := direct[r.Index]; r.Mode == "proxied" && ok && d > 0 {
			out = append(out, f(r)/d)
		}
	}
	return out
}

func ratios(xs []float64) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(s, ", ")
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}

// markdown renders the report: the summary table against the targets, the
// CPU split, and every run.
func markdown(r Report) string {
	var w strings.Builder
	med := func(mode string, f func(Run) float64) float64 { return median(pick(r.Runs, mode, f)) }
	prodD := med("direct", func(x Run) float64 { return x.Produce.MBps })
	prodP := med("proxied", func(x Run) float64 { return x.Produce.MBps })
	consD := med("direct", func(x Run) float64 { return x.Consume.MBps })
	consP := med("proxied", func(x Run) float64 { return x.Consume.MBps })
	p50D := med("direct", func(x Run) float64 { return x.Latency.P50 })
	p50P := med("proxied", func(x Run) float64 { return x.Latency.P50 })
	p99D := med("direct", func(x Run) float64 { return x.Latency.P99 })
	p99P := med("proxied", func(x Run) float64 { return x.Latency.P99 })

	// CPU per GB over all proxied runs: total proxy CPU over total bytes.
	cpuOf := func(mode string, which func(Phase) float64, phases ...func(Run) Phase) (cpu, gb float64) {
		for _, x := range r.Runs {
			if x.Mode != mode {
				continue
			}
			for _, ph := range phases {
				p := ph(x)
				cpu += which(p)
				gb += float64(p.Bytes) / 1e9
			}
		}
		return cpu, gb
	}
	prodPh := func(x Run) Phase { return x.Produce }
	consPh := func(x Run) Phase { return x.Consume }
	proxyCPU := func(p Phase) float64 { return p.ProxyCPU }
	clientCPU := func(p Phase) float64 { return p.ClientCPU }
	clusterCPU := func(p Phase) float64 { return p.ClusterCPU }
	pcpu, pgb := cpuOf("proxied", proxyCPU, prodPh, consPh)
	cpuPerGB := pcpu / pgb
	var wire float64
	for _, x := range r.Runs {
		if x.Mode == "proxied" {
			wire += x.Produce.ProxyWireB + x.Consume.ProxyWireB
		}
	}

	nD := len(pick(r.Runs, "direct", func(Run) float64 { return 0 }))
	fmt.Fprintf(&w, "### Proxy overhead: %d MiB produced then consumed per run, %d runs per mode (medians)\n\n", r.MiBPerRun, nD)
	fmt.Fprintf(&w, "Cluster: %s, `%s`; proxy `switchyard proxy` on %s, one upstream cluster. Records of %d B, incompressible, no compression, acks=all, idempotent; %d partitions, replication %d. MB = 10^6 B of record values; GB = 10^9 B.\n\n",
		r.Cluster, r.Bootstrap, r.ProxyListen, r.RecordBytes, r.Partitions, r.Replication)
	fmt.Fprintf(&w, "Machine: %d CPUs, %s; %s; Linux %s; started %s; load average %s before, %s after.\n\n",
		r.Machine.CPUs, r.Machine.CPUModel, r.Machine.GoVersion, r.Machine.Kernel, r.Started.Format(time.RFC3339), r.LoadBefore, r.LoadAfter)
	fmt.Fprintf(&w, "| metric | direct | through proxy | proxy / direct (or value) | target | |\n|---|---:|---:|---:|---|---|\n")
	prodR, consR := pairRatios(r.Runs, func(x Run) float64 { return x.Produce.MBps }), pairRatios(r.Runs, func(x Run) float64 { return x.Consume.MBps })
	fmt.Fprintf(&w, "| produce throughput, MB/s | %.0f | %.0f | %.3f× (pairs: %s) | ≥ 0.97× | %s |\n", prodD, prodP, prodP/prodD, ratios(prodR), verdict(prodP/prodD >= 0.97))
	fmt.Fprintf(&w, "| consume throughput, MB/s | %.0f | %.0f | %.3f× (pairs: %s) | ≥ 0.97× | %s |\n", consD, consP, consP/consD, ratios(consR), verdict(consP/consD >= 0.97))
	fmt.Fprintf(&w, "| proxy CPU per GB forwarded (produce + consume) | | | %.2f CPU-s/GB | ≤ 2 | %s |\n", cpuPerGB, verdict(cpuPerGB <= 2))
	fmt.Fprintf(&w, "| proxy RSS idle (after /readyz, before any client) | | | %.1f MiB (%.1f anon + %.1f file) | ≤ 15 MiB | %s |\n",
		mib(r.IdleRSS), mib(r.IdleRSSAnon), mib(r.IdleRSSFile), verdict(mib(r.IdleRSS) <= 15))
	fmt.Fprintf(&w, "| proxy RSS peak (VmHWM) / after the runs | | | %.1f / %.1f MiB | | |\n", mib(r.PeakRSS), mib(r.EndRSS))
	fmt.Fprintf(&w, "| ProduceSync latency p50, ms | %.3f | %.3f | +%.3f ms | | |\n", p50D, p50P, p50P-p50D)
	fmt.Fprintf(&w, "| ProduceSync latency p99, ms | %.3f | %.3f | +%.3f ms | ≤ +0.1 ms | %s |\n", p99D, p99P, p99P-p99D, verdict(p99P-p99D <= 0.1))
	w.WriteString("\n")

	// Where the CPU went, per GB of record values, in each mode.
	fmt.Fprintf(&w, "CPU seconds per GB of record values, summed over the measured runs (who pays for the bytes on this %d-CPU machine):\n\n", r.Machine.CPUs)
	w.WriteString("| phase | mode | proxy | client (proxybench) | cluster |\n|---|---|---:|---:|---:|\n")
	for _, ph := range []struct {
		name string
		f    func(Run) Phase
	}{{"produce", prodPh}, {"consume", consPh}} {
		for _, mode := range []string{"direct", "proxied"} {
			pc, gb := cpuOf(mode, proxyCPU, ph.f)
			cc, _ := cpuOf(mode, clientCPU, ph.f)
			kc, _ := cpuOf(mode, clusterCPU, ph.f)
			k := "n/a"
			if kc >= 0 {
				k = fmt.Sprintf("%.2f", kc/gb)
			}
			fmt.Fprintf(&w, "| %s | %s | %.2f | %.2f | %s |\n", ph.name, mode, pc/gb, cc/gb, k)
		}
	}
	fmt.Fprintf(&w, "\nThe proxy counted %.2f GB on the wire (requests + responses, all API keys) for %.2f GB of record values in the proxied runs (%.2f CPU-s per wire GB). Its CPU while the direct runs ran (refresh loop only): %.2f s.\n\n",
		wire/1e9, pgb, pcpu/(wire/1e9), r.IdleCPUDirect)

	w.WriteString("Every run (in the order run):\n\n| # | mode | produce MB/s | consume MB/s | p50 ms | p99 ms | proxy CPU-s produce / consume | proxy RSS after, MiB |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	for _, x := range r.Runs {
		fmt.Fprintf(&w, "| %d | %s | %.0f | %.0f | %.3f | %.3f | %.2f / %.2f | %.1f |\n", x.Index+1, x.Mode,
			x.Produce.MBps, x.Consume.MBps, x.Latency.P50, x.Latency.P99, x.Produce.ProxyCPU, x.Consume.ProxyCPU, mib(x.Consume.ProxyRSSEnd))
	}
	return w.String()
}
