//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// procCPU returns the user+system CPU time of a process, in clock ticks,
// from /proc/PID/stat (fields 14 and 15, counted after the command name,
// which may itself hold spaces or parentheses).
func procCPU(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return ut + st, nil
}

// procMem returns VmRSS and VmHWM (peak RSS) of a process, in bytes, from
// /proc/PID/status.
func procMem(pid int) (rss, hwm int64, err error) {
	m, err := procStatus(pid)
	if err != nil {
		return 0, 0, err
	}
	if m["VmRSS"] == 0 || m["VmHWM"] == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS/VmHWM", pid)
	}
	return m["VmRSS"], m["VmHWM"], nil
}

// procStatus returns the kB-valued fields of /proc/PID/status (VmRSS,
// VmHWM, RssAnon, RssFile, ...), in bytes.
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
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/status: %s: %q", pid, k, v)
		}
		m[k] = n << 10
	}
	return m, nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: getconf's
// answer, or 100, which every Linux architecture Go supports uses.
func clockTicks() float64 {
	if out, err := exec.Command("getconf", "CLK_TCK").Output(); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}
