//go:build !linux

package main

import "errors"

var errNoProc = errors.New("benchproxy reads CPU time and RSS from /proc: Linux only")

func procCPU(int) (int64, error)               { return 0, errNoProc }
func procMem(int) (rss, hwm int64, err error)  { return 0, 0, errNoProc }
func procStatus(int) (map[string]int64, error) { return nil, errNoProc }
func clockTicks() float64                      { return 100 }
