package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// runReport prints the Markdown tables of a run: copy speed and cost of
// each tool, the ratios of the last tool to the first, and the data.
func runReport(args []string) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fillPath := fs.String("fill", "", "fill's JSON")
	verifyPath := fs.String("verify", "", "verify's JSON (optional)")
	ours := fs.String("ours", "switchyard", "the tool whose ratios to the others are reported")
	var runs multiFlag
	fs.Var(&runs, "run", "`name=file`: a run's JSON (repeat, in run order)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	var fill FillResult
	if err := readJSON(*fillPath, &fill); err != nil {
		return err
	}
	type named struct {
		name string
		r    RunResult
	}
	var rs []named
	for _, r := range runs {
		name, path, ok := strings.Cut(r, "=")
		if !ok {
			return usageError{fmt.Errorf("-run %q: want name=file", r)}
		}
		var rr RunResult
		if err := readJSON(path, &rr); err != nil {
			return err
		}
		rs = append(rs, named{name, rr})
	}
	if len(rs) == 0 {
		return usageError{errors.New("want at least one -run")}
	}
	var ver *VerifyResult
	if *verifyPath != "" {
		ver = &VerifyResult{}
		if err := readJSON(*verifyPath, ver); err != nil {
			return err
		}
	}
	w := os.Stdout
	mb := float64(fill.ValueBytes) / 1e6
	recB := float64(fill.RecordBytes)

	type derived struct {
		mbps, rps, cpuGB, mbPerCPU                 float64
		copyS, copyMB, copyRec, copyCPU            float64
		copyMBps, copyRps, copyCPUGB, copyMBPerCPU float64
		srcBrokerGB, dstBrokerGB                   float64
		startS, startCPU                           float64
	}
	d := map[string]derived{}
	for _, n := range rs {
		r := n.r
		x := derived{startS: r.StartupSeconds, startCPU: r.CPUAtFirst}
		x.mbps = mb / r.WallSeconds
		x.rps = float64(r.Records) / r.WallSeconds
		x.cpuGB = r.CPUSeconds / (mb / 1e3)
		x.mbPerCPU = mb / r.CPUSeconds
		x.copyS = r.WallSeconds - r.StartupSeconds
		x.copyRec = float64(r.Records - r.RecordsAtFirst)
		x.copyMB = x.copyRec * recB / 1e6
		x.copyCPU = r.CPUSeconds - r.CPUAtFirst
		x.copyMBps = x.copyMB / x.copyS
		x.copyRps = x.copyRec / x.copyS
		x.copyCPUGB = x.copyCPU / (x.copyMB / 1e3)
		x.copyMBPerCPU = x.copyMB / x.copyCPU
		x.srcBrokerGB = r.SourceBrokerCopyCPU / (x.copyMB / 1e3)
		x.dstBrokerGB = r.TargetBrokerCopyCPU / (x.copyMB / 1e3)
		d[n.name] = x
	}

	fmt.Fprintf(w, "Whole run, from the start of the process until the target holds every record (%s MB, %d records):\n\n", f(mb), fill.Records)
	fmt.Fprintln(w, "| tool | MB | records | wall s | MB/s | records/s | CPU-s | CPU-s/GB | MB per CPU-s |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range rs {
		x := d[n.name]
		fmt.Fprintf(w, "| %s | %s | %d | %s | %s | %s | %s | %s | %s |\n", n.name, f(mb), n.r.Records, f(n.r.WallSeconds),
			f(x.mbps), f(x.rps), f(n.r.CPUSeconds), f(x.cpuGB), f(x.mbPerCPU))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Start-up (process start until the first record is written to the target) and the copy after it (until every record is visible):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| tool | start-up s | first visible s | start-up CPU-s | copy s | copy MB | copy MB/s | copy records/s | copy CPU-s | copy CPU-s/GB | copy MB per CPU-s | cores busy |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, n := range rs {
		x := d[n.name]
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n.name, f(x.startS), f(n.r.FirstVisibleSeconds), f(x.startCPU),
			f(x.copyS), f(x.copyMB), f(x.copyMBps), f(x.copyRps), f(x.copyCPU), f(x.copyCPUGB), f(x.copyMBPerCPU), f(x.copyCPU/x.copyS))
	}
	fmt.Fprintln(w)

	if o, ok := d[*ours]; ok && len(rs) > 1 {
		fmt.Fprintf(w, "Ratios, %s / other (throughput per core = MB per CPU-second of the tool's process; goal ≥ 15× MirrorMaker 2):\n\n", *ours)
		fmt.Fprintln(w, "| vs | MB/s (whole run) | MB/s (copy only) | throughput per core (whole run) | throughput per core (copy only) | CPU-s/GB, other / ours (copy only) | start-up s, other / ours |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
		for _, n := range rs {
			if n.name == *ours {
				continue
			}
			x := d[n.name]
			fmt.Fprintf(w, "| %s | %s× | %s× | **%s×** | **%s×** | %s× | %s× |\n", n.name, f(o.mbps/x.mbps), f(o.copyMBps/x.copyMBps),
				f(o.mbPerCPU/x.mbPerCPU), f(o.copyMBPerCPU/x.copyMBPerCPU), f(x.copyCPUGB/o.copyCPUGB), f(x.startS/o.startS))
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "Memory, stopping, and the clusters' CPU over the copy (first record → done; both clusters are JVMs on the same 2 cores, and other users' load on a shared test bed lands here too):")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| tool | RSS at done, MiB | peak RSS, MiB (process) | stop s | source brokers CPU-s/GB | target broker CPU-s/GB | load avg start → done | done by |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|---|")
	for _, n := range rs {
		x := d[n.name]
		stop := f(n.r.StopSeconds)
		if n.r.Killed {
			stop += " (KILLed)"
		}
		fmt.Fprintf(w, "| %s | %s | %s (%s) | %s | %s | %s | %s → %s | %s |\n", n.name, f(float64(n.r.RSSBytes)/(1<<20)),
			f(float64(n.r.PeakRSSBytes)/(1<<20)), n.r.PeakRSSComm, stop, f(x.srcBrokerGB), f(x.dstBrokerGB),
			n.r.LoadAvgStart, n.r.LoadAvgDone, n.r.DoneBy)
	}
	fmt.Fprintln(w)

	if ver != nil {
		fmt.Fprintln(w, "The data, read back to the end of every topic after the runs (read_committed):")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| topic | records | value MB | batches | records per batch | codecs (batches) | compressed MB | lz4 ratio | records equal | keys+values equal | headers+timestamps equal |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---|---:|---:|---|---|---|")
		row := func(label string, t TopicRead, chk *CopyCheck) {
			eq := func(b bool) string {
				if b {
					return "yes"
				}
				return "**NO**"
			}
			c1, c2, c3 := "(source)", "", ""
			if chk != nil {
				c1, c2, c3 = eq(chk.CountsOK), eq(chk.ContentOK), eq(chk.HeadersTS)
			}
			var codecs []string
			for k, v := range t.Codecs {
				codecs = append(codecs, fmt.Sprintf("%s %d", k, v))
			}
			sort.Strings(codecs)
			data := t.Batches - controlBatches(t)
			perBatch := 0.0
			if data > 0 {
				perBatch = float64(t.Records) / float64(data)
			}
			fmt.Fprintf(w, "| %s `%s` | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n", label, t.Topic, t.Records, f(float64(t.ValueBytes)/1e6),
				t.Batches, f(perBatch), strings.Join(codecs, ", "), f(float64(t.CompressedBytes)/1e6),
				f(float64(t.UncompressedBytes)/float64(t.CompressedBytes)), c1, c2, c3)
		}
		row("source", ver.Source, nil)
		for _, n := range rs {
			t, ok := ver.Copies[n.name]
			if !ok {
				continue
			}
			var chk *CopyCheck
			for i := range ver.Checks {
				if ver.Checks[i].Name == n.name {
					chk = &ver.Checks[i]
				}
			}
			row(n.name, t, chk)
		}
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Records per batch counts data batches only (a transactional copy also holds one commit-marker batch per partition per transaction; they are in the batch count).")
		fmt.Fprintln(w)
	}
	return nil
}

func controlBatches(t TopicRead) int64 {
	var n int64
	for _, p := range t.Partitions {
		n += p.ControlRecords
	}
	return n
}

// f formats a number with 3 significant digits, or none after the point
// from 100 on.
func f(x float64) string {
	switch {
	case x != x:
		return "n/a"
	case x >= 100 || x <= -100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10 || x <= -10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.3g", x)
	}
}
