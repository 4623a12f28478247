package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

const usage = `usage: mirrorbench ping|fill|run|verify|report|cleanup|port [flags]
(see go doc ./bench/mirror/cmd/mirrorbench)
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "ping":
		err = runPing(ctx, args)
	case "fill":
		err = runFill(ctx, args)
	case "run":
		err = runRun(ctx, args)
	case "verify":
		err = runVerify(ctx, args)
	case "report":
		err = runReport(args)
	case "cleanup":
		err = runCleanup(ctx, args)
	case "port":
		err = runPort()
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "mirrorbench %s: %v\n", cmd, err)
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

// list splits a comma-separated flag value.
func list(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func newAdmin(bootstrap string, opts ...kgo.Opt) (*kgo.Client, *kadm.Client, error) {
	seeds := list(bootstrap)
	if len(seeds) == 0 {
		return nil, nil, usageError{errors.New("a bootstrap list is required")}
	}
	// kadm answers metadata from a cache no older than MetadataMinAge
	// (default 5 s): a topic that appears (a mirror creating it) would stay
	// unknown that long.
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...), kgo.MetadataMinAge(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		return nil, nil, err
	}
	return cl, kadm.NewClient(cl), nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	if path == "" || path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// runPing exits 0 when both clusters answer Metadata.
func runPing(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ping", flag.ContinueOnError)
	source := fs.String("source", "", "source bootstrap `host:port,...`")
	target := fs.String("target", "", "target bootstrap `host:port,...`")
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	for name, b := range map[string]string{"source": *source, "target": *target} {
		if b == "" {
			continue
		}
		cl, adm, err := newAdmin(b)
		if err != nil {
			return err
		}
		_, err = adm.BrokerMetadata(ctx)
		cl.Close()
		if err != nil {
			return fmt.Errorf("%s cluster %s does not answer Metadata: %w", name, b, err)
		}
	}
	return nil
}

func runPort() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	return nil
}

// endOffsets lists a topic's offsets per partition with fn (start, end or
// committed); a topic that does not exist yields an empty map and
// exists=false.
func endOffsets(ctx context.Context, fn func(context.Context, ...string) (kadm.ListedOffsets, error), topic string) (offs map[int32]int64, exists bool, err error) {
	lo, err := fn(ctx, topic)
	if err != nil {
		return nil, false, err
	}
	offs = map[int32]int64{}
	exists = true
	for _, o := range lo[topic] {
		if o.Partition == -1 {
			exists = false
			continue
		}
		if o.Err != nil {
			return nil, true, fmt.Errorf("%s/%d: %w", topic, o.Partition, o.Err)
		}
		offs[o.Partition] = o.Offset
	}
	if len(offs) == 0 {
		exists = false
	}
	return offs, exists, nil
}
