package main

import (
	"context"
	"flag"
	"io"

	"github.com/switchyard/switchyard/internal/demo"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	records := fs.Int("records", 2000, "records to produce before and after the switch (each)")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return err
		}
		return usageError{err}
	}
	return demo.Run(ctx, demo.Config{RecordsPerPhase: *records}, stdout)
}
