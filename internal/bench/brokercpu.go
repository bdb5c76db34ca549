package bench

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The broker's CPU (--broker-pid): the bench reads the user+system CPU
// time of the broker's process (Linux: /proc/PID/stat, utime+stime, in
// clock ticks; processCPUTicks in sys_unix.go) at the two instants that
// bound a contender's throughput span, where the contender's meter takes
// its own CPU time (meter.fetched, meter.commit): the first event fetched
// and the commit of the last. Those instants are in the contender's
// process, so the contender samples the broker there and reports the
// difference beside its own (childResult.BrokerCPUSeconds).

// procStat is what the bench uses of /proc/PID/stat.
type procStat struct {
	// Comm is the command name (field 2, without its parentheses).
	Comm string
	// UTime and STime are fields 14 and 15: user and system CPU time of
	// the process (every thread of it), in clock ticks.
	UTime, STime uint64
}

// parseProcStat parses the contents of /proc/PID/stat. The command name,
// field 2, is in parentheses and may itself hold spaces and parentheses:
// the fields after it are read from after the last ')'.
func parseProcStat(data []byte) (procStat, error) {
	open, end := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("no (command) field")
	}
	// After the command: field 3 (state) is rest[0], so field n is
	// rest[n-3].
	rest := strings.Fields(string(data[end+1:]))
	if len(rest) < 15-3+1 {
		return procStat{}, fmt.Errorf("%d fields after the command, want at least %d", len(rest), 15-3+1)
	}
	ut, err := strconv.ParseUint(rest[14-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("utime: %w", err)
	}
	st, err := strconv.ParseUint(rest[15-3], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("stime: %w", err)
	}
	return procStat{Comm: string(data[open+1 : end]), UTime: ut, STime: st}, nil
}

// readProcStat reads and parses /proc/PID/stat.
func readProcStat(pid int) (procStat, error) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return procStat{}, fmt.Errorf("no process %d (%s does not exist; the broker's CPU is read from Linux's /proc)", pid, path)
		}
		return procStat{}, err
	}
	s, err := parseProcStat(data)
	if err != nil {
		return procStat{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// checkBrokerPID is Validate's check of --broker-pid: the process's CPU
// time can be read.
func checkBrokerPID(pid int) error {
	if _, err := processCPUTicks(pid); err != nil {
		return fmt.Errorf("--broker-pid %d: %w", pid, err)
	}
	return nil
}

// FindBrokerPID is --broker-pid auto: the pid of the process of this host
// that listens on the port of addr (host:port), found from the listening
// sockets of /proc/net/tcp and /proc/net/tcp6 and the socket links of
// /proc/*/fd (Linux only). It fails, saying why, when addr's host is not
// an address of this host, when no process visible to the bench listens
// there (a broker run by another user or in another namespace) or when
// more than one does.
func FindBrokerPID(addr string) (int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port <= 0 || port > 65535 {
		return 0, fmt.Errorf("%s: bad port", addr)
	}
	if err := checkLocal(host); err != nil {
		return 0, fmt.Errorf("%s: %w", addr, err)
	}
	var inodes []uint64
	read := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		read++
		inodes = append(inodes, listenInodes(data, port)...)
	}
	if read == 0 {
		return 0, errors.New("cannot read /proc/net/tcp or /proc/net/tcp6 (not Linux?): give the broker's pid")
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("no socket of this host listens on port %d", port)
	}
	pids, err := socketOwners(inodes)
	if err != nil {
		return 0, err
	}
	switch len(pids) {
	case 0:
		return 0, fmt.Errorf("a socket listens on port %d, but no process the bench may inspect holds it (another user's, or another namespace's): give the broker's pid", port)
	case 1:
		return pids[0], nil
	}
	return 0, fmt.Errorf("processes %v all listen on port %d: give the broker's pid", pids, port)
}

// checkLocal fails unless host (a name or an address) resolves to an
// address of this host.
func checkLocal(host string) error {
	ips, err := net.LookupIP(host)
	if err != nil {
		return err
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if ip.IsLoopback() || ip.IsUnspecified() {
			return nil
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
				return nil
			}
		}
	}
	return fmt.Errorf("%s is not an address of this host", host)
}

// listenInodes returns the socket inodes of the listening sockets (state
// 0A) on port in data, the contents of /proc/net/tcp or /proc/net/tcp6:
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//	 0: 0100007F:4A84 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123456 ...
func listenInodes(data []byte, port int) []uint64 {
	var out []uint64
	for i, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if i == 0 || len(f) < 10 || f[3] != "0A" {
			continue
		}
		_, hexPort, ok := strings.Cut(f[1], ":")
		if p, err := strconv.ParseUint(hexPort, 16, 16); !ok || err != nil || int(p) != port {
			continue
		}
		if inode, err := strconv.ParseUint(f[9], 10, 64); err == nil && inode != 0 {
			out = append(out, inode)
		}
	}
	return out
}

// socketOwners returns the pids, sorted, of the processes whose open
// files (/proc/PID/fd) include one of the sockets inodes. Processes it may
// not inspect are skipped.
func socketOwners(inodes []uint64) ([]int, error) {
	want := map[string]bool{}
	for _, n := range inodes {
		want["socket:["+strconv.FormatUint(n, 10)+"]"] = true
	}
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", d.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join("/proc", d.Name(), "fd", fd.Name())); err == nil && want[link] {
				pids = append(pids, pid)
				break
			}
		}
	}
	slices.Sort(pids)
	return pids, nil
}
