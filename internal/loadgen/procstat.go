package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat. Linux fixes it at 100 for every
// architecture, independent of the kernel's CONFIG_HZ.
const userHZ = 100

// procSample is one reading of a process's counters and the kernel's UDP drop counters.
type procSample struct {
	cpuTicks   uint64 // utime + stime, in 1/userHZ s
	threads    int
	vmHWMKiB   uint64
	vmRSSKiB   uint64
	udpRcvbuf  uint64 // /proc/net/snmp Udp: RcvbufErrors
	udp6Rcvbuf uint64 // /proc/net/snmp6 Udp6RcvbufErrors
	portDrops  uint64 // drops column of /proc/net/udp{,6} rows bound to the gateway port
	ownDrops   uint64 // the same for the load generator's own sockets
}

// sampler reads the counters Run reports around the measured window.
type sampler struct {
	root     string // "/proc", replaced in tests
	pid      int
	port     int
	ownPorts map[int]bool
}

func (s *sampler) sample() (procSample, error) {
	var ps procSample
	var err error
	if s.pid > 0 {
		if ps.cpuTicks, ps.threads, err = readProcStat(fmt.Sprintf("%s/%d/stat", s.root, s.pid)); err != nil {
			return ps, err
		}
		if ps.vmHWMKiB, ps.vmRSSKiB, err = readProcStatus(fmt.Sprintf("%s/%d/status", s.root, s.pid)); err != nil {
			return ps, err
		}
	}
	if ps.udpRcvbuf, err = readSNMP(s.root+"/net/snmp", "Udp:", "RcvbufErrors"); err != nil {
		return ps, err
	}
	// /proc/net/snmp6 is absent when IPv6 is disabled; that is a zero, not an error.
	ps.udp6Rcvbuf, _ = readSNMP6(s.root+"/net/snmp6", "Udp6RcvbufErrors")
	for _, f := range []string{"/net/udp", "/net/udp6"} {
		port, own, err := readUDPDrops(s.root+f, s.port, s.ownPorts)
		if err != nil && !os.IsNotExist(err) {
			return ps, err
		}
		ps.portDrops += port
		ps.ownDrops += own
	}
	return ps, nil
}

// readProcStat returns utime+stime and num_threads from /proc/<pid>/stat.
func readProcStat(path string) (ticks uint64, threads int, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	// comm (field 2) may hold spaces and parentheses; the fields after the last ')' are fixed.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse %s: no ')'", path)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15, num_threads 20.
	if len(f) < 18 {
		return 0, 0, fmt.Errorf("parse %s: %d fields", path, len(f)+2)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	th, err3 := strconv.Atoi(f[17])
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("parse %s: bad utime/stime/num_threads", path)
	}
	return ut + st, th, nil
}

// readProcStatus returns VmHWM and VmRSS in KiB from /proc/<pid>/status.
func readProcStatus(path string) (hwm, rss uint64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmHWM" && k != "VmRSS") {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse %s: %s: %w", path, k, err)
		}
		if k == "VmHWM" {
			hwm = n
		} else {
			rss = n
		}
	}
	return hwm, rss, nil
}

// readSNMP returns one column of /proc/net/snmp, where each protocol has a header line and a
// value line that both start with prefix ("Udp:").
func readSNMP(path, prefix, column string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	var header []string
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != prefix {
			continue
		}
		if header == nil {
			header = f
			continue
		}
		for i, name := range header {
			if name == column && i < len(f) {
				return strconv.ParseUint(f[i], 10, 64)
			}
		}
		break
	}
	return 0, fmt.Errorf("parse %s: no %s %s", path, prefix, column)
}

// readSNMP6 returns one "name value" line of /proc/net/snmp6.
func readSNMP6(path, name string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("parse %s: no %s", path, name)
}

// readUDPDrops sums the drops column (the last) of /proc/net/udp or udp6 over the rows whose
// local port is port, and separately over the rows whose local port is in own.
func readUDPDrops(path string, port int, own map[int]bool) (portDrops, ownDrops uint64, err error) {
	if port == 0 && len(own) == 0 {
		return 0, 0, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, err
	}
	first := true
	for line := range strings.Lines(string(b)) {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(line)
		if len(f) < 13 {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if !ok {
			continue
		}
		p, err := strconv.ParseUint(hexPort, 16, 16)
		if err != nil {
			continue
		}
		d, err := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err != nil {
			continue
		}
		if int(p) == port {
			portDrops += d
		}
		if own[int(p)] {
			ownDrops += d
		}
	}
	return portDrops, ownDrops, nil
}

// selfCPU returns the CPU time this process has used, user plus system, in nanoseconds.
func selfCPU() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
