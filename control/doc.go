// Package control is Switchyard's control plane: it knows the clusters,
// keeps a registry of proxy sidecars connected over SidecarService.Connect
// (each receives versioned desired state and acknowledges what it
// applied), runs the mirrors it is configured with, and drives cutovers as
// a persisted state machine — preflight, gate, drain, sync-groups, flip,
// release, verify — rolling back safely from any step before release.
//
// Every transition is stored before it takes effect (Store, an embedded
// file store with atomic writes), so a restarted control plane resumes a
// cutover or rolls it back and never lifts a gate on a state it cannot
// prove. Server serves ControlService and SidecarService over gRPC, and
// ControlService as REST/JSON through grpc-gateway: callers authenticate
// with bearer tokens or client certificates and act by role (auth.go);
// sidecar credentials claim only their apps and instances, operator ones
// are refused to sidecars off loopback; browser requests are refused
// (browser.go); and Limits bound what one credential or connection can
// make the control plane hold.
package control
