package main

import (
	"context"
	"errors"
	"io"
)

// runControl runs the control plane. (Being built.)
func runControl(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	return usageError{errors.New("not built yet")}
}
