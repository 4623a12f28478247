//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
)

// procStat is what is read of /proc/PID/stat: the parent, and CPU times in
// clock ticks (utime+stime; cutime+cstime of children it has reaped).
type procStat struct {
	ppid      int
	cpu, ccpu int64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15,
	// cutime 16, cstime 17.
	f := strings.Fields(s[i+1:])
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	var v [5]int64
	for j, k := range []int{1, 11, 12, 13, 14} {
		if v[j], err = strconv.ParseInt(f[k], 10, 64); err != nil {
			return procStat{}, fmt.Errorf("/proc/%d/stat: field %d: %w", pid, k+3, err)
		}
	}
	return procStat{ppid: int(v[0]), cpu: v[1] + v[2], ccpu: v[3] + v[4]}, nil
}

// treePids returns root and every live descendant of it.
func treePids(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// treeCPU is the CPU time, in clock ticks, of root's process tree: every
// live process's utime+stime plus what each has reaped from its children.
func treeCPU(root int) (int64, error) {
	var total int64
	for i, pid := range treePids(root) {
		st, err := readStat(pid)
		if err != nil {
			if i == 0 {
				return 0, err
			}
			continue // exited meanwhile
		}
		total += st.cpu + st.ccpu
	}
	return total, nil
}

// procCPU is one process's utime+stime in clock ticks.
func procCPU(pid int) (int64, error) {
	st, err := readStat(pid)
	return st.cpu, err
}

// treeMem returns the summed VmRSS of root's tree and the largest VmHWM
// (peak RSS) of a process in it, in bytes, and the pid holding that peak.
func treeMem(root int) (rss, peak int64, peakPid int) {
	for _, pid := range treePids(root) {
		m, err := procStatus(pid)
		if err != nil {
			continue
		}
		rss += m["VmRSS"]
		if m["VmHWM"] > peak {
			peak, peakPid = m["VmHWM"], pid
		}
	}
	return rss, peak, peakPid
}

// procStatus returns the kB-valued fields of /proc/PID/status, in bytes.
func procStatus(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			m[k] = n << 10
		}
	}
	return m, nil
}

// procComm is the command name of a process.
func procComm(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times.
func clockTicks() float64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}

// ownGroup starts the child in a process group of its own (so it and
// everything it starts can be signalled together) and has the kernel kill
// it if this process dies without cleaning up.
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup signals the process group led by pid.
func signalGroup(pid int, sig syscall.Signal) error { return syscall.Kill(-pid, sig) }

// alivePids returns the pids that still run (not zombies).
func alivePids(pids []int) []int {
	var out []int
	for _, p := range pids {
		if syscall.Kill(p, 0) != nil {
			continue
		}
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p)); err == nil {
			s := string(b)
			if i := strings.LastIndexByte(s, ')'); i >= 0 && strings.HasPrefix(s[i+1:], " Z") {
				continue // zombie
			}
		}
		out = append(out, p)
	}
	return out
}

func killPid(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }
