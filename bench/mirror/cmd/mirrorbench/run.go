package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Sample is one point of a run's timeline.
type Sample struct {
	T       float64 `json:"t"`       // seconds since the tool started
	Records int64   `json:"records"` // records copied so far
	CPU     float64 `json:"cpu_s"`   // the tool's CPU seconds so far
	// Visible is the sum of the target partitions' last stable offsets:
	// records (and, for a transactional copy, commit markers) a
	// read_committed consumer can read.
	Visible int64 `json:"visible"`
	// Written is the records written, by the high watermarks (uncommitted
	// included), capped at the source partitions' ends.
	Written int64 `json:"written"`
}

// RunResult is what run writes.
type RunResult struct {
	Tool        string   `json:"tool"`
	Command     []string `json:"command"`
	SourceTopic string   `json:"source_topic"`
	TargetTopic string   `json:"target_topic"`
	DoneBy      string   `json:"done_by"` // "target offsets" or "status"
	PollMs      float64  `json:"poll_ms"`
	Records     int64    `json:"records"` // source records to copy

	// Seconds from the start of the process until the first record was
	// written to the target (its high watermark moved), until the first
	// record was visible there (read_committed: its last stable offset
	// moved; later than written for a transactional copy), and until the
	// target held every record, visible.
	StartupSeconds      float64 `json:"startup_s"`
	FirstVisibleSeconds float64 `json:"first_visible_s"`
	WallSeconds         float64 `json:"wall_s"`
	// RecordsAtFirst is how many records had been written at the first
	// observation of a written record (the copy-only rate excludes them).
	RecordsAtFirst int64 `json:"records_at_first"`
	// CPU seconds of the tool's process tree at those two moments.
	CPUAtFirst float64 `json:"cpu_at_first_s"`
	CPUSeconds float64 `json:"cpu_s"`
	// Memory of the tree at completion: summed RSS, and the peak RSS of its
	// largest process.
	RSSBytes     int64  `json:"rss_bytes"`
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
	PeakRSSComm  string `json:"peak_rss_comm"`
	// CPU seconds of the clusters' broker processes over the same spans
	// (whole run; first record to completion).
	SourceBrokerCPU     float64 `json:"source_broker_cpu_s"`
	TargetBrokerCPU     float64 `json:"target_broker_cpu_s"`
	SourceBrokerCopyCPU float64 `json:"source_broker_copy_cpu_s"`
	TargetBrokerCopyCPU float64 `json:"target_broker_copy_cpu_s"`
	// Stopping: how long it took after SIGTERM, and whether it needed KILL.
	StopSeconds float64 `json:"stop_s"`
	Killed      bool    `json:"killed"`

	TargetLSO      map[int32]int64 `json:"target_lso_at_done"`
	TargetHWM      map[int32]int64 `json:"target_hwm_at_done"`
	SourceEnd      map[int32]int64 `json:"source_end"`
	StatusNext     map[int32]int64 `json:"status_next_at_done,omitempty"`
	LoadAvgStart   string          `json:"loadavg_start"`
	LoadAvgDone    string          `json:"loadavg_done"`
	PerfFile       string          `json:"perf_file,omitempty"`
	Timeline       []Sample        `json:"timeline"`
	LogFile        string          `json:"log_file"`
	StatusFailures int             `json:"status_failures,omitempty"`
}

// mirrorStatus is the part of switchyard's GET /v1/status that is read
// (field names match case-insensitively).
type mirrorStatus struct {
	Ready      bool
	LastError  string
	Partitions []struct {
		Topic     string
		Partition int32
		Next      int64
	}
}

func runRun(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	tool := fs.String("tool", "", "tool name for the report")
	source := fs.String("source", "", "source bootstrap `host:port,...`")
	target := fs.String("target", "", "target bootstrap `host:port,...`")
	topic := fs.String("topic", "", "source topic")
	targetTopic := fs.String("target-topic", "", "target topic (default: -topic)")
	statusURL := fs.String("status", "", "switchyard status `URL` (GET /v1/status): completion is read from it")
	poll := fs.Duration("poll", 50*time.Millisecond, "poll interval")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up when the copy is not complete after this long")
	stopTimeout := fs.Duration("stop-timeout", 30*time.Second, "SIGKILL the tool when it has not exited this long after SIGTERM")
	logFile := fs.String("log", "", "the tool's stdout and stderr go here (required)")
	pidFile := fs.String("pid-file", "", "write the tool's process group id here")
	out := fs.String("json", "-", "write the result here")
	perfFile := fs.String("perf", "", "perf record -g the tool from the first record to completion into this `file`")
	perfFreq := fs.Int("perf-freq", 499, "perf sampling frequency, Hz")
	sourcePids := fs.String("source-pids", "", "broker pids of the source cluster (their CPU is reported)")
	targetPids := fs.String("target-pids", "", "broker pids of the target cluster")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	argv := fs.Args()
	if len(argv) == 0 || *topic == "" || *logFile == "" {
		return usageError{errors.New("want -topic, -log and a command after the flags")}
	}
	if *targetTopic == "" {
		*targetTopic = *topic
	}
	ticks := clockTicks()
	srcCl, srcAdm, err := newAdmin(*source)
	if err != nil {
		return err
	}
	defer srcCl.Close()
	dstCl, dstAdm, err := newAdmin(*target)
	if err != nil {
		return err
	}
	defer dstCl.Close()

	srcStart, _, err := endOffsets(ctx, srcAdm.ListStartOffsets, *topic)
	if err != nil {
		return fmt.Errorf("source start offsets: %w", err)
	}
	srcEnd, exists, err := endOffsets(ctx, srcAdm.ListEndOffsets, *topic)
	if err != nil || !exists {
		return fmt.Errorf("source topic %s: exists=%v: %v", *topic, exists, err)
	}
	var total int64
	for p, e := range srcEnd {
		total += e - srcStart[p]
	}
	if _, exists, err := endOffsets(ctx, dstAdm.ListEndOffsets, *targetTopic); err != nil {
		return fmt.Errorf("target topic %s: %w", *targetTopic, err)
	} else if exists {
		return fmt.Errorf("target topic %s exists already: run wants a fresh copy", *targetTopic)
	}
	srcB, dstB := pidList(*sourcePids), pidList(*targetPids)

	logf, err := os.Create(*logFile)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	ownGroup(cmd)

	res := RunResult{Tool: *tool, Command: argv, SourceTopic: *topic, TargetTopic: *targetTopic,
		DoneBy: "target offsets", PollMs: float64(*poll) / float64(time.Millisecond), Records: total,
		SourceEnd: srcEnd, LogFile: *logFile, LoadAvgStart: loadAvg()}
	if *statusURL != "" {
		res.DoneBy = "status"
	}
	srcCPU0, dstCPU0 := pidsCPU(srcB), pidsCPU(dstB)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", argv[0], err)
	}
	pid := cmd.Process.Pid
	if *pidFile != "" {
		_ = os.WriteFile(*pidFile, []byte(strconv.Itoa(pid)+"\n"), 0o644)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	exitedDone := false
	var tree []int // the tool's processes, as last seen
	stop := func() {
		if exitedDone {
			return
		}
		tree = treePids(pid)
		ts := time.Now()
		_ = signalGroup(pid, syscall.SIGTERM)
		wait := time.NewTimer(*stopTimeout)
		defer wait.Stop()
		select {
		case <-exited:
		case <-wait.C:
			res.Killed = true
			_ = signalGroup(pid, syscall.SIGKILL)
			<-exited
		}
		exitedDone = true
		// The group leader may exit before the rest of its tree (a shell
		// running a JVM): wait for every process seen, KILL what is left.
		deadline := time.Now().Add(*stopTimeout)
		for {
			left := alivePids(tree)
			if len(left) == 0 {
				break
			}
			if time.Now().After(deadline) {
				res.Killed = true
				for _, p := range left {
					killPid(p)
				}
				deadline = time.Now().Add(*stopTimeout)
			}
			time.Sleep(50 * time.Millisecond)
		}
		res.StopSeconds = time.Since(ts).Seconds()
	}
	defer stop()

	cpuNow := func() float64 {
		c, err := treeCPU(pid)
		if err != nil {
			return -1
		}
		return float64(c) / ticks
	}
	httpc := &http.Client{Timeout: 2 * time.Second}
	var (
		first       bool
		srcCPU1     float64
		dstCPU1     float64
		lastSample  = -1.0
		perfCmd     *exec.Cmd
		perfExited  chan error
		deadline    = time.NewTimer(*timeout)
		ticker      = time.NewTicker(*poll)
		statusNext  map[int32]int64
		lso, hwm    map[int32]int64
		copied      int64
		complete    bool
		visible     int64
		pollCtx, pc = context.WithCancel(ctx)
	)
	defer pc()
	defer deadline.Stop()
	defer ticker.Stop()
	stopPerf := func() {
		if perfCmd == nil {
			return
		}
		_ = perfCmd.Process.Signal(os.Interrupt)
		select {
		case <-perfExited:
		case <-time.After(60 * time.Second):
			_ = perfCmd.Process.Kill()
			<-perfExited
		}
		perfCmd = nil
	}
	defer stopPerf()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			exitedDone = true
			return fmt.Errorf("%s exited before the copy was complete (%v) after %.1f s; %d of %d records copied; see %s:\n%s",
				argv[0], err, time.Since(t0).Seconds(), copied, total, *logFile, tail(*logFile, 15))
		case <-deadline.C:
			return fmt.Errorf("the copy was not complete after %v: %d of %d records copied; see %s", *timeout, copied, total, *logFile)
		case <-ticker.C:
		}
		t := time.Since(t0).Seconds()
		// LSO first: the high watermark read after it is never below it.
		l, _, err := endOffsets(pollCtx, dstAdm.ListCommittedOffsets, *targetTopic)
		if err != nil {
			continue // leadership moving, topic being created: next poll
		}
		h, _, err := endOffsets(pollCtx, dstAdm.ListEndOffsets, *targetTopic)
		if err != nil {
			continue
		}
		lso, hwm = l, h
		visible = 0
		for _, o := range lso {
			visible += o
		}
		written, _ := progress(hwm, srcStart, srcEnd)
		if *statusURL != "" {
			st, err := getStatus(pollCtx, httpc, *statusURL)
			if err != nil {
				res.StatusFailures++
				continue
			}
			statusNext = map[int32]int64{}
			for _, p := range st.Partitions {
				if p.Topic == *topic {
					statusNext[p.Partition] = p.Next
				}
			}
			copied, complete = progress(statusNext, srcStart, srcEnd)
			// Copied by the status; visible once the commit markers are
			// written: no partition may have an open transaction.
			for p, o := range hwm {
				if lso[p] != o {
					complete = false
				}
			}
		} else {
			copied, complete = progress(lso, srcStart, srcEnd)
		}
		if !first && written > 0 {
			first = true
			res.StartupSeconds = t
			res.RecordsAtFirst = written
			res.CPUAtFirst = cpuNow()
			srcCPU1, dstCPU1 = pidsCPU(srcB), pidsCPU(dstB)
			if *perfFile != "" {
				perfCmd, perfExited, err = startPerf(*perfFile, *perfFreq, pid)
				if err != nil {
					return err
				}
				res.PerfFile = *perfFile
			}
		}
		if res.FirstVisibleSeconds == 0 && visible > 0 {
			res.FirstVisibleSeconds = t
		}
		if first && complete {
			res.WallSeconds = t
			res.CPUSeconds = cpuNow()
			srcCPU2, dstCPU2 := pidsCPU(srcB), pidsCPU(dstB)
			var peakPid int
			res.RSSBytes, res.PeakRSSBytes, peakPid = treeMem(pid)
			res.PeakRSSComm = procComm(peakPid)
			res.LoadAvgDone = loadAvg()
			res.SourceBrokerCPU, res.TargetBrokerCPU = (srcCPU2-srcCPU0)/ticks, (dstCPU2-dstCPU0)/ticks
			res.SourceBrokerCopyCPU, res.TargetBrokerCopyCPU = (srcCPU2-srcCPU1)/ticks, (dstCPU2-dstCPU1)/ticks
			res.Timeline = append(res.Timeline, Sample{T: t, Records: copied, CPU: res.CPUSeconds, Visible: visible, Written: written})
			break
		}
		if t-lastSample >= 1 {
			lastSample = t
			res.Timeline = append(res.Timeline, Sample{T: t, Records: copied, CPU: cpuNow(), Visible: visible, Written: written})
		}
	}
	stopPerf()
	res.StatusNext = statusNext
	res.TargetLSO = lso
	res.TargetHWM = hwm
	stop()
	fmt.Fprintf(os.Stderr, "%s: first record written to the target after %.2f s (%.2f CPU-s), visible after %.2f s, all %d after %.2f s (%.2f CPU-s); stopped in %.1f s\n",
		*tool, res.StartupSeconds, res.CPUAtFirst, res.FirstVisibleSeconds, total, res.WallSeconds, res.CPUSeconds, res.StopSeconds)
	return writeJSON(*out, res)
}

// progress sums, per partition, the copied position (a target offset or the
// status's Next) capped at the source's end, and reports whether every
// partition has reached it.
func progress(pos, start, end map[int32]int64) (copied int64, complete bool) {
	complete = true
	for p, e := range end {
		n := min(pos[p], e) - start[p]
		if n > 0 {
			copied += n
		}
		if pos[p] < e {
			complete = false
		}
	}
	return copied, complete
}

func getStatus(ctx context.Context, c *http.Client, url string) (*mirrorStatus, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var st mirrorStatus
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	return &st, nil
}

// startPerf samples every process of pid's tree but shells.
func startPerf(file string, freq, pid int) (*exec.Cmd, chan error, error) {
	var pids []string
	for _, p := range treePids(pid) {
		if c := procComm(p); c != "bash" && c != "sh" {
			pids = append(pids, strconv.Itoa(p))
		}
	}
	cmd := exec.Command("perf", "record", "-F", strconv.Itoa(freq), "-g", "-o", file, "-p", strings.Join(pids, ","))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("perf record: %w", err)
	}
	ch := make(chan error, 1)
	go func() { ch <- cmd.Wait() }()
	return cmd, ch, nil
}

func pidList(s string) []int {
	var out []int
	for _, x := range list(s) {
		if n, err := strconv.Atoi(x); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// pidsCPU sums the CPU ticks of the given processes (a gone one counts 0).
func pidsCPU(pids []int) float64 {
	var t int64
	for _, p := range pids {
		if c, err := procCPU(p); err == nil {
			t += c
		}
	}
	return float64(t)
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sortedParts returns a map's partitions in order.
func sortedParts(m map[int32]int64) []int32 {
	ps := make([]int32, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	return ps
}
