package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/switchyard/switchyard/mirror/verify"
)

const verifyUsage = `Usage: switchyard verify --config mirror.yaml [flags]
       switchyard verify --source HOST:PORT,... --target HOST:PORT,... --mirror NAME [flags]

With --config (the mirror's own file) the clusters, their TLS and SASL
settings, the mirror's name and its prefix come from it.

Proves, partition by partition, that the target holds exactly the source's
records over the range the mirror NAME has copied: it reads both sides
(read_committed), counts the records and compares a SHA-256 digest of key,
value, headers and timestamp, pairing every record through the mirror's
offset map. Records removed on one side since the copy (compaction,
retention) are reported as such, not as corruption.

Prints one line per partition and a summary. Exit code 0 if every
partition matches, 1 on any mismatch or error, 2 on bad flags.

Each flag can also be set as SWITCHYARD_VERIFY_<FLAG> in the environment
(upper case, dashes as underscores); flags win.

Example:
  switchyard verify --source kafka-a:9092 --target b-1.msk:9092 --mirror orders --topics 'orders\..*'

Flags:
`

// runVerify runs `switchyard verify`. It returns nil when every partition
// matches, a usageError for bad flags, and any other error (exit code 1)
// on a mismatch or when verification fails.
func runVerify(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseVerifyOptions(args, getenv, stderr)
	if err != nil {
		return err
	}
	rep, err := verify.Run(ctx, cfg)
	if err != nil {
		return err
	}
	printVerifyReport(stdout, &rep)
	if !rep.OK() {
		bad := 0
		for i := range rep.Partitions {
			if !rep.Partitions[i].OK() {
				bad++
			}
		}
		return fmt.Errorf("mirror %s: %d of %d partitions do not match", rep.Mirror, bad, len(rep.Partitions))
	}
	return nil
}

func parseVerifyOptions(args []string, getenv func(string) string, stderr io.Writer) (verify.Config, error) {
	cfg := verify.DefaultConfig()
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, verifyUsage)
		fs.PrintDefaults()
	}
	mirrorConfig := fs.String("config", "", "the mirror's config `file` (switchyard mirror --config): bootstraps, TLS/SASL, name and prefix come from it; flags override")
	source := fs.String("source", "", "source cluster seed brokers, `host:port[,host:port...]`")
	target := fs.String("target", "", "target cluster seed brokers, `host:port[,host:port...]`")
	fs.StringVar(&cfg.Mirror, "mirror", "", "`name` of the mirror whose copy is verified")
	fs.StringVar(&cfg.Topics, "topics", "", "only source topics whose whole name matches this `regexp`")
	fs.StringVar(&cfg.TargetPrefix, "prefix", "", "the `prefix` the mirror puts before topic names on the target")
	fs.DurationVar(&cfg.PartitionTimeout, "timeout", cfg.PartitionTimeout, "time allowed to verify one partition")
	fs.IntVar(&cfg.Parallel, "parallel", cfg.Parallel, "partitions verified at once")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, usageError{err}
	}
	if fs.NArg() > 0 {
		return cfg, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "SWITCHYARD_VERIFY_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if err != nil || set[f.Name] || getenv(env) == "" {
			return
		}
		if e := fs.Set(f.Name, getenv(env)); e != nil {
			err = usageError{fmt.Errorf("%s: %w", env, e)}
		}
	})
	if err != nil {
		return cfg, err
	}
	if *mirrorConfig != "" {
		mc, err := loadMirrorConfig(*mirrorConfig)
		if err != nil {
			return cfg, usageError{fmt.Errorf("--config: %w", err)}
		}
		cfg.SourceBootstrap, cfg.TargetBootstrap = mc.SourceBootstrap, mc.TargetBootstrap
		cfg.Source, cfg.Target = mc.Source, mc.Target
		if !set["mirror"] {
			cfg.Mirror = mc.Name
		}
		if !set["prefix"] {
			cfg.TargetPrefix = mc.Topics.Prefix
		}
	}
	if *source != "" {
		cfg.SourceBootstrap = splitAddrs(*source)
	}
	if *target != "" {
		cfg.TargetBootstrap = splitAddrs(*target)
	}
	if len(cfg.SourceBootstrap) == 0 {
		return cfg, usageError{errors.New("--source is required")}
	}
	if len(cfg.TargetBootstrap) == 0 {
		return cfg, usageError{errors.New("--target is required")}
	}
	if cfg.Mirror == "" {
		return cfg, usageError{errors.New("--mirror is required: the name of the mirror whose copy is verified")}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{err}
	}
	return cfg, nil
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// printVerifyReport writes the table and the summary line.
func printVerifyReport(w io.Writer, rep *verify.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TOPIC\tPARTITION\tSOURCE RANGE\tTARGET RANGE\tSOURCE RECORDS\tTARGET RECORDS\tDIGEST\tSTATUS")
	counts := map[verify.Status]int{}
	var srcRecs, tgtRecs int64
	for i := range rep.Partitions {
		p := &rep.Partitions[i]
		counts[p.Status()]++
		digest := "differs"
		switch {
		case p.Err != nil:
			digest = "-"
		case p.DigestsEqual():
			digest = "equal"
		}
		topic := p.Topic
		if p.TargetTopic != p.Topic {
			topic += " -> " + p.TargetTopic
		}
		srcRecs += p.SourceCount
		tgtRecs += p.TargetCount
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", topic, p.Partition, p.Source, p.Target,
			countOrDash(p, p.SourceCount), countOrDash(p, p.TargetCount), digest, p.Detail())
	}
	_ = tw.Flush()
	verdict := "OK"
	if !rep.OK() {
		verdict = "FAILED"
	}
	fmt.Fprintf(w, "\nmirror %s: %s: %d partitions: %d match, %d match after cleanup, %d mismatch, %d error; %d source records, %d target records\n",
		rep.Mirror, verdict, len(rep.Partitions), counts[verify.StatusMatch], counts[verify.StatusCleaned],
		counts[verify.StatusMismatch], counts[verify.StatusError], srcRecs, tgtRecs)
}

func countOrDash(p *verify.PartitionReport, n int64) string {
	if p.Err != nil {
		return "-"
	}
	return strconv.FormatInt(n, 10)
}
