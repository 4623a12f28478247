package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
)

// runCleanup deletes the benchmark's topics and groups on both clusters:
// exact names, and names matching whole-name regexps (MirrorMaker 2's
// internal topics and groups carry this run's cluster aliases). Failures are
// reported and make the exit status 1, after trying everything.
func runCleanup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("cleanup", flag.ContinueOnError)
	source := fs.String("source", "", "source bootstrap `host:port,...`")
	target := fs.String("target", "", "target bootstrap `host:port,...`")
	srcTopics := fs.String("source-topics", "", "topics to delete on the source, `a,b,...`")
	dstTopics := fs.String("target-topics", "", "topics to delete on the target")
	srcMatch := fs.String("source-match", "", "also delete source topics whose whole name matches this `regexp`")
	dstMatch := fs.String("target-match", "", "also delete target topics whose whole name matches this `regexp`")
	groups := fs.String("groups", "", "delete groups (on both clusters) whose whole name matches this `regexp`")
	timeout := fs.Duration("timeout", 60*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var failed int
	for _, c := range []struct{ name, boot, topics, match string }{
		{"source", *source, *srcTopics, *srcMatch},
		{"target", *target, *dstTopics, *dstMatch},
	} {
		if c.boot == "" {
			continue
		}
		cl, adm, err := newAdmin(c.boot)
		if err != nil {
			return err
		}
		n, err := cleanCluster(ctx, adm, c.name, list(c.topics), c.match, *groups)
		cl.Close()
		failed += n
		if err != nil {
			fmt.Fprintf(os.Stderr, "cleanup %s: %v\n", c.name, err)
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d deletions failed", failed)
	}
	return nil
}

func cleanCluster(ctx context.Context, adm *kadm.Client, name string, topics []string, match, groups string) (failed int, err error) {
	del := map[string]bool{}
	existing, err := adm.ListTopics(ctx)
	if err != nil {
		return 0, err
	}
	for _, t := range topics {
		if existing.Has(t) {
			del[t] = true
		}
	}
	if match != "" {
		re, err := regexp.Compile("^(?:" + match + ")$")
		if err != nil {
			return 0, err
		}
		for _, t := range existing.Names() {
			if re.MatchString(t) {
				del[t] = true
			}
		}
	}
	names := make([]string, 0, len(del))
	for t := range del {
		names = append(names, t)
	}
	sort.Strings(names)
	if len(names) > 0 {
		resp, err := adm.DeleteTopics(ctx, names...)
		if err != nil {
			return 0, err
		}
		for _, r := range resp.Sorted() {
			if r.Err != nil {
				fmt.Fprintf(os.Stderr, "cleanup %s: delete topic %s: %v\n", name, r.Topic, r.Err)
				failed++
			}
		}
		fmt.Fprintf(os.Stderr, "cleanup %s: deleted topics %v\n", name, names)
	}
	if groups != "" {
		re, err := regexp.Compile("^(?:" + groups + ")$")
		if err != nil {
			return failed, err
		}
		listed, err := adm.ListGroups(ctx)
		if err != nil {
			return failed, err
		}
		var gs []string
		for _, g := range listed.Groups() {
			if re.MatchString(g) {
				gs = append(gs, g)
			}
		}
		if len(gs) > 0 {
			resp, err := adm.DeleteGroups(ctx, gs...)
			if err != nil {
				return failed, err
			}
			for _, r := range resp.Sorted() {
				if r.Err != nil {
					fmt.Fprintf(os.Stderr, "cleanup %s: delete group %s: %v\n", name, r.Group, r.Err)
					failed++
				}
			}
			fmt.Fprintf(os.Stderr, "cleanup %s: deleted groups %v\n", name, gs)
		}
	}
	return failed, nil
}
