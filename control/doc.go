// Package control is the control plane: the sidecar registry and the
// persisted drain-then-flip cutover state machine. It is not implemented yet;
// see the project's issue tracker ("Control plane").
package control
