module github.com/rpwrap/rpwrap

go 1.26.0

require github.com/cilium/ebpf v0.22.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
