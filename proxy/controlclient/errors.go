package controlclient

import (
	"context"
	"errors"

	"github.com/switchyard/switchyard/proxy"
)

// Sentinel errors for desired states the Client does not apply. They reach
// the control plane as the text of ConnectRequest.apply_error.
var (
	// ErrStaleVersion: a desired state older than the one applied. The
	// Client keeps what it applied; a control plane that lost its version
	// counter must continue above the applied version the sidecar reports.
	ErrStaleVersion = errors.New("older than the applied version")
	// ErrVersionConflict: a desired state with the applied version but
	// other content. Versions identify states; one version never means two.
	ErrVersionConflict = errors.New("differs from the state applied under the same version")
	// ErrInvalidDesiredState: a desired state without an active cluster, or
	// with content under version 0 (which means "no desired state").
	ErrInvalidDesiredState = errors.New("invalid desired state")
)

// retryable reports whether applying the same desired state again may
// succeed: the target cluster did not answer, another switch (from the
// admin API) was running, or the proxy was not serving yet. An unknown
// cluster or an invalid gate fails the same way every time, and a state
// the Client refused on its version is not retried either.
func retryable(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, proxy.ErrUnknownCluster),
		errors.Is(err, proxy.ErrInvalidGate),
		errors.Is(err, ErrInvalidDesiredState),
		errors.Is(err, ErrStaleVersion),
		errors.Is(err, ErrVersionConflict),
		errors.Is(err, context.Canceled):
		return false
	}
	return true
}
