// Package childproc holds what the tests and benchmarks that start
// processes of their own (a control plane, a JVM, a proxy under load) need
// so that none outlives them.
package childproc
