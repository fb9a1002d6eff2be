// Package testutil holds helpers shared by rpwrap's tests: privilege checks
// that turn into failures under CI, and leak checks for file descriptors,
// child processes and BPF objects.
package testutil
