package control

import switchyardv1 "github.com/switchyard/switchyard/api/switchyard/v1"

// PauseHoldLeases stops (or resumes) the renewal of every cutover's hold
// leases, as a control plane that went silent would: for end-to-end tests
// in package control_test.
func PauseHoldLeases(ct *Controller, paused bool) { ct.leasesPaused.Store(paused) }

// SetUsage makes the registry take u as what sidecar key (app/instance)
// reports its clients do, in place of its reports: for end-to-end tests in
// package control_test whose sidecars do not report usage.
func SetUsage(r *Registry, key string, u *switchyardv1.Usage) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.usageFor == nil {
		r.usageFor = map[string]*switchyardv1.Usage{}
	}
	r.usageFor[key] = u
}
