package proxy

import "errors"

// Sentinel errors returned by the Proxy's control methods.
var (
	// ErrUnknownCluster: a switch or config names a cluster that is not configured.
	ErrUnknownCluster = errors.New("unknown cluster")
	// ErrSwitchInProgress: another switch is running.
	ErrSwitchInProgress = errors.New("a switch is already in progress")
	// ErrInvalidGate: a gate names no API keys, or a key or mode out of range.
	ErrInvalidGate = errors.New("invalid gate")
	// ErrClosed: the proxy is shutting down.
	ErrClosed = errors.New("proxy closed")
	// ErrOpenTransactions: a switch found transactions still open at its
	// drain deadline and did not flip.
	ErrOpenTransactions = errors.New("transactions still open")
	// ErrUnreachable: no broker of a cluster answered.
	ErrUnreachable = errors.New("cluster unreachable")
	// ErrStopTimeout: Run returned at its stop timeout with connections
	// still being served.
	ErrStopTimeout = errors.New("stop timeout")
)
