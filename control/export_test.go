package control

// PauseHoldLeases stops (or resumes) the renewal of every cutover's hold
// leases, as a control plane that went silent would: for end-to-end tests
// in package control_test.
func PauseHoldLeases(ct *Controller, paused bool) { ct.leasesPaused.Store(paused) }
