// Package identity holds the rules for the names a sidecar identifies
// itself by — its application, its instance, its labels — and the cluster
// names it reports. The sidecar (proxy/controlclient) checks its own at
// start; the control plane (control) checks every stream's, since a
// sidecar credential's holder may send anything.
package identity

import (
	"errors"
	"fmt"
)

// MaxLabels is the most labels a sidecar may carry.
const MaxLabels = 32

// MaxClusters is the most cluster names a sidecar may report.
const MaxClusters = 64

// CheckName accepts what the control plane, its REST API and people can
// all show and type: printable ASCII without spaces, at most 253 bytes (a
// DNS name's length, so a pod or service name fits). It does not refuse
// the empty name; callers that need one say so.
func CheckName(s string) error {
	if len(s) > 253 {
		return fmt.Errorf("%.40q...: longer than 253 bytes", s)
	}
	for _, r := range s {
		if r <= ' ' || r > '~' {
			return fmt.Errorf("%q: only printable ASCII without spaces", s)
		}
	}
	return nil
}

// CheckLabel accepts Kubernetes-style labels: a key of letters, digits and
// "-_./" (a prefix such as example.com/ included), a value of letters,
// digits and "-_." (possibly empty), each at most 253 bytes. Keeping ','
// ';' and '=' out lets a list of labels be written k=v,k=v unambiguously.
func CheckLabel(k, v string) error {
	if k == "" {
		return fmt.Errorf("empty key (value %.40q)", v)
	}
	if len(k) > 253 || !labelChars(k, true) {
		return fmt.Errorf("key %.40q: want letters, digits and -_./, at most 253", k)
	}
	if len(v) > 253 || !labelChars(v, false) {
		return fmt.Errorf("%s: value %.40q: want letters, digits and -_., at most 253", k, v)
	}
	return nil
}

// CheckLabels checks every label with CheckLabel, and that there are at
// most MaxLabels.
func CheckLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return fmt.Errorf("%d labels: at most %d", len(labels), MaxLabels)
	}
	var errs []error
	for k, v := range labels {
		if err := CheckLabel(k, v); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func labelChars(s string, slash bool) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-', r == '_', r == '.':
		case r == '/' && slash:
		default:
			return false
		}
	}
	return true
}
