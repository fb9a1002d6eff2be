//go:build linux

package procfs

import "testing"

func TestParseNetstatPairsNamesWithValues(t *testing.T) {
	in := "TcpExt: SyncookiesSent ListenOverflows ListenDrops TCPMigrateReqSuccess TCPMigrateReqFailure\n" +
		"TcpExt: 0 7 9 200 1\n" +
		"IpExt: InNoRoutes InTruncatedPkts\n" +
		"IpExt: 3 x\n" +
		"MPTcpExt: MPCapableSYNRX\n" +
		"Other: 1\n"
	got := ParseNetstat([]byte(in))
	ext := got["TcpExt"]
	if ext["ListenOverflows"] != 7 || ext["ListenDrops"] != 9 || ext["TCPMigrateReqSuccess"] != 200 || ext["TCPMigrateReqFailure"] != 1 {
		t.Errorf("TcpExt: %v", ext)
	}
	if _, ok := got["IpExt"]; ok {
		t.Errorf("IpExt with a value that is not a number: %v, want it left out", got["IpExt"])
	}
	if _, ok := got["MPTcpExt"]; ok {
		t.Error("a pair of lines with different prefixes was read")
	}
}

func TestReadTCPExtReadsTheKernelsCounters(t *testing.T) {
	if _, err := ReadTCPExt(); err != nil {
		t.Fatal(err)
	}
}
