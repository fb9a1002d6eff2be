//go:build linux

package systemd

import (
	"os"
	"testing"
)

func BenchmarkParseNotify(b *testing.B) {
	msg := []byte("READY=1\nSTATUS=generation 2 serving on 0.0.0.0:80\nMAINPID=4242\n")
	for b.Loop() {
		ParseNotify(msg)
	}
}

// BenchmarkNotifierStatus is one sd_notify: socket, connect, send, close.
func BenchmarkNotifierStatus(b *testing.B) {
	dir := b.TempDir()
	s, err := ListenNotify(dir) // a receiver that drains datagrams
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Setenv("NOTIFY_SOCKET", s.Path())
	n := NewNotifier()
	for b.Loop() {
		if err := n.Status("generation %d serving", 2); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAncestry is the /proc walk done for every datagram received.
func BenchmarkAncestry(b *testing.B) {
	pid := os.Getpid()
	for b.Loop() {
		ancestry(pid)
	}
}
