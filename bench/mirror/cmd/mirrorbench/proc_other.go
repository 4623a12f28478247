//go:build !linux

package main

import (
	"errors"
	"os/exec"
	"syscall"
)

var errNoProc = errors.New("mirrorbench reads CPU time and RSS from /proc: Linux only")

func treeCPU(int) (int64, error)                 { return 0, errNoProc }
func procCPU(int) (int64, error)                 { return 0, errNoProc }
func treeMem(int) (rss, peak int64, peakPid int) { return 0, 0, 0 }
func procStatus(int) (map[string]int64, error)   { return nil, errNoProc }
func procComm(int) string                        { return "" }
func clockTicks() float64                        { return 100 }
func ownGroup(*exec.Cmd)                         {}
func signalGroup(int, syscall.Signal) error      { return errNoProc }
func alivePids([]int) []int                      { return nil }
func killPid(int)                                {}

func treePids(pid int) []int { return []int{pid} }
