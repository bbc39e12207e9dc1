package loadgen

import (
	"os"
	"path/filepath"
	"testing"
)

func writeProc(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// Fixtures copied from a Linux 6.x /proc, edited to known values.
const (
	fixStat = "4242 (coap gw) (x) S 1 4242 4242 0 -1 4194560 12130 0 0 0 1234 567 0 0 20 0 9 0 123456 1262587904 25000 " +
		"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	fixStatus = "Name:\tcoapgw\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1262588 kB\nVmSize:\t 1262588 kB\n" +
		"VmLck:\t       0 kB\nVmHWM:\t  108236 kB\nVmRSS:\t  100000 kB\nThreads:\t9\n"
	fixSNMP = "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"Udp: 1000 2 7 900 5 0 0 0 0\n" +
		"UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\n" +
		"UdpLite: 0 0 0 0 99 0 0 0 0\n"
	fixSNMP6 = "Udp6InDatagrams                 \t10\nUdp6RcvbufErrors                \t3\nUdp6SndbufErrors\t0\n"
	fixUDP   = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		// the gateway, two SO_REUSEPORT sockets on port 25683 (0x6453)
		"  100: 0100007F:6453 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1001 2 0000000000000000 11\n" +
		"  101: 0100007F:6453 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1002 2 0000000000000000 4\n" +
		// a load generator socket on port 40000 (0x9C40), connected to the gateway
		"  102: 0100007F:9C40 0100007F:6453 01 00000000:00000000 00:00000000 00000000     0        0 1003 2 0000000000000000 2\n" +
		// someone else
		"  103: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 1004 2 0000000000000000 1000\n"
	fixUDP6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"  5: 00000000000000000000000001000000:6453 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1005 2 0000000000000000 1\n"
)

func TestSampler(t *testing.T) {
	root := writeProc(t, map[string]string{
		"4242/stat": fixStat, "4242/status": fixStatus,
		"net/snmp": fixSNMP, "net/snmp6": fixSNMP6, "net/udp": fixUDP, "net/udp6": fixUDP6,
	})
	s := &sampler{root: root, pid: 4242, port: 25683, ownPorts: map[int]bool{40000: true}}
	got, err := s.sample()
	if err != nil {
		t.Fatal(err)
	}
	want := procSample{
		cpuTicks: 1234 + 567, threads: 9, vmHWMKiB: 108236, vmRSSKiB: 100000,
		udpRcvbuf: 5, udp6Rcvbuf: 3, portDrops: 11 + 4 + 1, ownDrops: 2,
	}
	if got != want {
		t.Errorf("sample\n got %+v\nwant %+v", got, want)
	}
}

func TestSamplerMissing(t *testing.T) {
	// No IPv6 (snmp6, udp6 absent) and no gateway: still a sample.
	root := writeProc(t, map[string]string{"net/snmp": fixSNMP, "net/udp": fixUDP})
	s := &sampler{root: root, port: 25683}
	got, err := s.sample()
	if err != nil || got.udpRcvbuf != 5 || got.portDrops != 15 {
		t.Errorf("sample = %+v, %v", got, err)
	}
	// A gateway pid that does not exist is an error.
	s.pid = 999999
	if _, err := s.sample(); err == nil {
		t.Error("no error for a missing process")
	}
}

func TestSamplerSelf(t *testing.T) {
	s := &sampler{root: "/proc", pid: os.Getpid()}
	got, err := s.sample()
	if err != nil {
		t.Fatal(err)
	}
	if got.vmHWMKiB == 0 || got.threads == 0 {
		t.Errorf("own sample %+v", got)
	}
}
