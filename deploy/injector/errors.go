package injector

import "errors"

// Sentinel errors. Errors from Inject wrap one of these.
var (
	// ErrNoAppName: a pod annotated for injection has none of the
	// configured app labels and no switchyard.io/app annotation.
	ErrNoAppName = errors.New("no application name")
	// ErrBadAnnotation: an injector annotation has a value it cannot use.
	ErrBadAnnotation = errors.New("bad annotation")
)
