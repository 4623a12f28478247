package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// options are the command line's settings.
type options struct {
	sidecars       []int
	runs           int
	rate           float64
	partitions     int
	valueBytes     int
	warmup         time.Duration
	after          time.Duration
	statusInterval time.Duration
	mirrorTxn      time.Duration
	gateMode       string
	kafka          string
	envFile        string
	out            string
	runTimeout     time.Duration
	cpuProfile     string
	verbose        bool
	args           []string // the command line, for the report
}

func parseFlags(args []string) (*options, error) {
	o := &options{args: args}
	fs := flag.NewFlagSet("cutoverbench", flag.ContinueOnError)
	sidecars := fs.String("sidecars", "1,10,50", "comma-separated numbers of sidecars (one producer each)")
	fs.IntVar(&o.runs, "runs", 10, "cutovers per number of sidecars")
	fs.Float64Var(&o.rate, "rate", 100, "records per second per producer (open loop)")
	fs.IntVar(&o.partitions, "partitions", 6, "partitions of the topic")
	fs.IntVar(&o.valueBytes, "value-bytes", 100, "bytes per record value")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "production before each cutover")
	fs.DurationVar(&o.after, "after", time.Second, "production after each cutover")
	fs.DurationVar(&o.statusInterval, "status-interval", 0, "the sidecars' status report interval (0: controlclient's default)")
	fs.DurationVar(&o.mirrorTxn, "mirror-txn-interval", 0, "the mirror's TxnMaxInterval (0: mirror's default)")
	fs.StringVar(&o.gateMode, "gate-mode", "HOLD", "producer gate mode: HOLD or REJECT")
	fs.StringVar(&o.kafka, "kafka", "kfake", "kfake (in-process clusters) or real (the test bed of -env)")
	fs.StringVar(&o.envFile, "env", "testbed/.state/env", "test bed env file, for -kafka real")
	fs.StringVar(&o.out, "out", "bench/out/cutover", "directory for the report and JSON (empty: none)")
	fs.DurationVar(&o.runTimeout, "run-timeout", 3*time.Minute, "bound on one run, set-up to teardown")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of all runs to this file")
	fs.BoolVar(&o.verbose, "v", false, "log at info level (default: warnings)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range strings.Split(*sidecars, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-sidecars: %q: want positive integers", s)
		}
		o.sidecars = append(o.sidecars, n)
	}
	switch {
	case o.runs < 1:
		return nil, errors.New("-runs: must be positive")
	case o.rate <= 0:
		return nil, errors.New("-rate: must be positive")
	case o.partitions < 1:
		return nil, errors.New("-partitions: must be positive")
	case o.valueBytes < 24:
		return nil, errors.New("-value-bytes: at least 24 (the value carries the producer and sequence)")
	case o.kafka != "kfake" && o.kafka != "real":
		return nil, fmt.Errorf("-kafka: %q: want kfake or real", o.kafka)
	case o.statusInterval < 0 || o.mirrorTxn < 0:
		return nil, errors.New("-status-interval, -mirror-txn-interval: must not be negative")
	}
	o.gateMode = strings.ToUpper(o.gateMode)
	if o.gateMode != "HOLD" && o.gateMode != "REJECT" {
		return nil, fmt.Errorf("-gate-mode: %q: want HOLD or REJECT", o.gateMode)
	}
	return o, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "cutoverbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, o, os.Stdout)
	stop()
	os.Exit(code)
}

func newLogger(verbose bool) *zap.Logger {
	cfg := zap.NewDevelopmentConfig()
	cfg.DisableStacktrace = true
	cfg.Level = zap.NewAtomicLevelAt(zapcore.WarnLevel)
	if verbose {
		cfg.Level = zap.NewAtomicLevelAt(zapcore.InfoLevel)
	}
	log, err := cfg.Build()
	if err != nil {
		return zap.NewNop()
	}
	return log
}

// run runs every configured run and reports; it returns the exit status.
func run(ctx context.Context, o *options, stdout io.Writer) int {
	goroutinesAtStart := runtime.NumGoroutine()
	log := newLogger(o.verbose)
	defer func() { _ = log.Sync() }()

	rep := &report{opts: o, machine: machineInfo(), started: time.Now()}
	if d, err := measureStorePut(); err != nil {
		log.Warn("measure the store", zap.Error(err))
	} else {
		rep.storePutMs = d
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cutoverbench:", err)
			return 2
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "cutoverbench:", err)
			return 2
		}
		defer pprof.StopCPUProfile()
	}

	for _, n := range o.sidecars {
		for k := 1; k <= o.runs && ctx.Err() == nil; k++ {
			fmt.Fprintf(os.Stderr, "cutoverbench: %d sidecars, run %d/%d ...", n, k, o.runs)
			r := oneRun(ctx, o, n, k, log)
			rep.runs = append(rep.runs, r)
			if r.ok() {
				fmt.Fprintf(os.Stderr, " block window %.0f ms (gate %.0f, drain %.0f, flip %.0f, release %.0f), producers' max gap p50 %.0f ms; checks passed\n",
					r.BlockWindowMs, r.StepsMs["gate"], r.StepsMs["drain"], r.StepsMs["flip"], r.StepsMs["release"], pct(r.MaxGapMs, 0.5))
			} else {
				fmt.Fprintf(os.Stderr, " FAILED: %s\n", r.failure())
			}
		}
	}
	rep.finished = time.Now()
	if ctx.Err() != nil {
		rep.interrupted = true
	}

	// Every goroutine the runs started has been stopped by now; a few of
	// the runtime's and gRPC's may take a moment to notice. Any left after
	// 10 s are reported, with their stacks in -out.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutinesAtStart && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	rep.goroutines = [2]int{goroutinesAtStart, runtime.NumGoroutine()}
	if rep.goroutines[1] > goroutinesAtStart {
		buf := make([]byte, 4<<20)
		buf = buf[:runtime.Stack(buf, true)]
		log.Warn("goroutines left running at exit", zap.Int("at_start", goroutinesAtStart), zap.Int("now", rep.goroutines[1]))
		if o.out != "" && os.MkdirAll(o.out, 0o755) == nil {
			_ = os.WriteFile(filepath.Join(o.out, "goroutines-"+rep.started.UTC().Format("20060102-150405")+".txt"), buf, 0o644)
		}
		if o.verbose {
			os.Stderr.Write(buf)
		}
	}

	md := rep.markdown()
	fmt.Fprint(stdout, md)
	if o.out != "" {
		if err := writeOutputs(o.out, rep, md); err != nil {
			fmt.Fprintln(os.Stderr, "cutoverbench:", err)
			return 1
		}
	}
	if !rep.allOK() {
		return 1
	}
	return 0
}

func writeOutputs(dir string, rep *report, md string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	stamp := rep.started.UTC().Format("20060102-150405")
	js, err := json.MarshalIndent(rep.jsonValue(), "", "  ")
	if err != nil {
		return err
	}
	for name, b := range map[string][]byte{stamp + ".md": []byte(md), "latest.md": []byte(md), stamp + ".json": append(js, '\n')} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "cutoverbench: report in %s\n", filepath.Join(dir, stamp+".md"))
	return nil
}

// machine describes where the benchmark ran.
type machine struct {
	CPUs      int     `json:"cpus"`
	CPUModel  string  `json:"cpu_model"`
	GoVersion string  `json:"go_version"`
	Kernel    string  `json:"kernel"`
	Load1     float64 `json:"load1_at_start"`
	Commit    string  `json:"commit"`
}

func machineInfo() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH}
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
	m.Load1 = loadAverage()
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
		if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(out) > 0 {
			m.Commit += " (with uncommitted changes)"
		}
	}
	return m
}

// loadAverage is the 1-minute load average, or 0 where unknown.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
