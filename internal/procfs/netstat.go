//go:build linux

package procfs

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// TCPExt is what rpwrap reads of the TcpExt counters of /proc/net/netstat,
// the network namespace's totals since boot (nstat(8) shows the same).
type TCPExt struct {
	ListenOverflows      uint64 // SYNs or ACKs dropped because an accept queue was full
	ListenDrops          uint64 // every drop of a connection request at a listener, overflows included
	TCPMigrateReqSuccess uint64 // requests moved out of a closing listener to another one (Linux 5.14)
	TCPMigrateReqFailure uint64 // requests that could not be moved, and were reset
}

// ReadTCPExt reads the TcpExt counters of the caller's network namespace.
// A counter the kernel does not have reads as 0. It fails when the file
// cannot be read or has no TcpExt lines.
func ReadTCPExt() (TCPExt, error) {
	b, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return TCPExt{}, err
	}
	ext, ok := ParseNetstat(b)["TcpExt"]
	if !ok {
		return TCPExt{}, fmt.Errorf("/proc/net/netstat: no TcpExt counters")
	}
	return TCPExt{ListenOverflows: ext["ListenOverflows"], ListenDrops: ext["ListenDrops"],
		TCPMigrateReqSuccess: ext["TCPMigrateReqSuccess"], TCPMigrateReqFailure: ext["TCPMigrateReqFailure"]}, nil
}

// ParseNetstat parses the format of /proc/net/netstat and /proc/net/snmp:
// pairs of lines, "Prefix: Name1 Name2 ..." then "Prefix: value1 value2
// ...". It returns the values by prefix and name; a pair whose lines do not
// match (another prefix, another number of fields, a value that is not a
// number) is left out.
func ParseNetstat(b []byte) map[string]map[string]uint64 {
	out := map[string]map[string]uint64{}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(string(lines[i])), strings.Fields(string(lines[i+1]))
		if len(names) < 2 || len(names) != len(values) || names[0] != values[0] || !strings.HasSuffix(names[0], ":") {
			continue
		}
		m := map[string]uint64{}
		for j := 1; j < len(names); j++ {
			v, err := strconv.ParseUint(values[j], 10, 64)
			if err != nil {
				m = nil
				break
			}
			m[names[j]] = v
		}
		if m != nil {
			out[strings.TrimSuffix(names[0], ":")] = m
		}
	}
	return out
}
