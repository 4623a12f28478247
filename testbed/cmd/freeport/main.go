// Command freeport picks or checks TCP ports on 127.0.0.1 for the real-Kafka
// test bed (testbed/kafka.sh).
//
//	freeport -n 8            print 8 distinct free ports, space-separated
//	freeport -check 19092 …  exit 1 naming the first port already in use
//
// Picked ports come from below the kernel's ephemeral range, so that the
// outgoing connections of the brokers and clients started next do not take
// them before the brokers bind.
package main

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

func main() {
	n := flag.Int("n", 0, "number of free ports to print")
	check := flag.Bool("check", false, "check that the ports given as arguments are free")
	flag.Parse()
	switch {
	case *check:
		if err := checkPorts(flag.Args()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case *n > 0:
		ports, err := pick(*n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		out := make([]string, len(ports))
		for i, p := range ports {
			out[i] = strconv.Itoa(p)
		}
		fmt.Println(strings.Join(out, " "))
	default:
		fmt.Fprintln(os.Stderr, "usage: freeport -n N | freeport -check PORT...")
		os.Exit(2)
	}
}

func checkPorts(args []string) error {
	for _, a := range args {
		p, err := strconv.Atoi(a)
		if err != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("invalid port %q", a)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", a))
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return fmt.Errorf("port %d on 127.0.0.1 is already in use", p)
			}
			return fmt.Errorf("port %d on 127.0.0.1 cannot be bound: %v", p, err)
		}
		ln.Close()
	}
	return nil
}

// pick holds every chosen port open until all are chosen, so they are
// distinct, then releases them.
func pick(n int) ([]int, error) {
	lo, hi := 20000, 32000
	if elo, _, ok := ephemeralRange(); ok && elo-1 < hi {
		hi = elo - 1
	}
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for tries := 0; len(ports) < n && tries < 50*n+1000; tries++ {
		p := lo + rand.IntN(hi-lo)
		if hi <= lo {
			p = 0 // no room below the ephemeral range: let the kernel choose
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		held = append(held, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	if len(ports) < n {
		return nil, fmt.Errorf("found only %d of %d free ports on 127.0.0.1", len(ports), n)
	}
	return ports, nil
}

func ephemeralRange() (lo, hi int, ok bool) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0, 0, false
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false
	}
	lo, err1 := strconv.Atoi(f[0])
	hi, err2 := strconv.Atoi(f[1])
	return lo, hi, err1 == nil && err2 == nil
}
