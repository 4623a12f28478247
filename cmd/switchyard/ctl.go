package main

import (
	"context"
	"errors"
	"io"
)

// runCtl is the control plane's command-line client. (Being built.)
func runCtl(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return usageError{errors.New("not built yet")}
}
