//go:build linux

package main

import "github.com/rpwrap/rpwrap/internal/demoserver"

// runServeDemo is the built-in socket-activated HTTP server that
// `rpwrap demo` and the tests wrap: LISTEN_FDS in, READY=1 out.
func runServeDemo(args []string) int { return demoserver.Main(args) }
