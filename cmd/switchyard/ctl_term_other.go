//go:build !linux && !darwin

package main

import "os"

// terminalWidth returns 0 (unknown) where the window size is not asked
// for: the live display then does not cut its lines.
func terminalWidth(*os.File) int { return 0 }
