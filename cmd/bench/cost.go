package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux the project runs on (sysconf(_SC_CLK_TCK) would
// need cgo to ask).
const clockTicks = 100

// process is one measured process of the stack.
type process struct {
	Name string
	PID  int // 0: not found
}

// processes are the API, the worker and the Temporal server.
type processes struct {
	list     []process
	warnings []string
}

// procSample is each found process's CPU seconds (user + system) by name.
type procSample map[string]float64

// findProcesses finds the stack's processes in /proc by their command line
// (bin/api, bin/worker, the temporal dev server), unless a pid was given.
// When several match, the one listening on the configured port wins.
func findProcesses(o options) *processes {
	roles := []struct {
		name     string
		override int
		port     int
		match    func(argv []string) bool
	}{
		{"api", o.APIPid, urlPort(o.API), func(argv []string) bool { return strings.HasSuffix(argv[0], "bin/api") }},
		{"worker", o.WorkerPid, urlPort(o.Worker), func(argv []string) bool { return strings.HasSuffix(argv[0], "bin/worker") }},
		{"temporal", o.TemporalPid, addrPort(o.Temporal), isTemporalServer},
	}
	ps := &processes{}
	cmdlines := readCmdlines()
	for _, r := range roles {
		p := process{Name: r.name, PID: r.override}
		if p.PID == 0 {
			var candidates []int
			for pid, argv := range cmdlines {
				if r.match(argv) {
					candidates = append(candidates, pid)
				}
			}
			slices.Sort(candidates)
			switch len(candidates) {
			case 0:
				ps.warnings = append(ps.warnings, fmt.Sprintf("no %s process found in /proc: its cost is not measured (pass --%s-pid)", r.name, r.name))
			case 1:
				p.PID = candidates[0]
			default:
				p.PID = listener(candidates, r.port)
				if p.PID == 0 {
					ps.warnings = append(ps.warnings, fmt.Sprintf("%d %s processes %v and none listens on port %d: pass --%s-pid", len(candidates), r.name, candidates, r.port, r.name))
				}
			}
		}
		ps.list = append(ps.list, p)
	}
	return ps
}

// isTemporalServer matches `temporal server start-dev` and `temporal-server start`.
func isTemporalServer(argv []string) bool {
	base := filepath.Base(argv[0])
	switch {
	case base == "temporal":
		return slices.Contains(argv, "server") && slices.Contains(argv, "start-dev")
	case strings.HasPrefix(base, "temporal-server"):
		return slices.Contains(argv, "start")
	}
	return false
}

// readCmdlines returns every readable process's argv.
func readCmdlines() map[int][]string {
	out := map[int][]string{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		out[pid] = strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	}
	return out
}

// listener returns the pid among candidates holding a socket that listens
// on port (from /proc/net/tcp{,6} and each candidate's open files), or 0.
func listener(candidates []int, port int) int {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			// sl local_address rem_address st ... inode (10th field); st 0A is LISTEN.
			if len(fs) < 10 || fs[3] != "0A" {
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
				inodes["socket:["+fs[9]+"]"] = true
			}
		}
	}
	for _, pid := range candidates {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			if link, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && inodes[link] {
				return pid
			}
		}
	}
	return 0
}

// sample reads each found process's CPU seconds so far.
func (ps *processes) sample() procSample {
	s := procSample{}
	for _, p := range ps.list {
		if p.PID == 0 {
			continue
		}
		if cpu, err := cpuSeconds(p.PID); err == nil {
			s[p.Name] = cpu
		}
	}
	return s
}

// cpuSeconds is utime + stime of pid, in seconds.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; the fields after it start
	// with the state (field 3), so utime (14) and stime (15) are at 11, 12.
	i := strings.LastIndex(string(b), ") ")
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fs := strings.Fields(string(b)[i+2:])
	if len(fs) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseUint(fs[11], 10, 64)
	stime, err2 := strconv.ParseUint(fs[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return float64(utime+stime) / clockTicks, nil
}

// peakRSSMB is VmHWM of pid (the resident set's high-water mark since the
// process started), in MiB.
func peakRSSMB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, err
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmHWM", pid)
}

// CostResult is the cost section's figures, over the end-to-end run.
type CostResult struct {
	Notifications int        `json:"notifications"`
	Processes     []ProcCost `json:"processes"`
	// CPUSecondsPer1000 sums the measured processes.
	CPUSecondsPer1000 float64 `json:"cpuSecondsPer1000"`
}

// ProcCost is one process's cost.
type ProcCost struct {
	Name              string  `json:"name"`
	PID               int     `json:"pid"`
	CPUSeconds        float64 `json:"cpuSeconds"`
	CPUSecondsPer1000 float64 `json:"cpuSecondsPer1000"`
	PeakRSSMB         float64 `json:"peakRssMb"`
}

// costOf turns two samples around the end-to-end run into CPU seconds per
// 1,000 delivered notifications, with each process's peak RSS.
func costOf(ps *processes, before, after procSample, delivered int) CostResult {
	c := CostResult{Notifications: delivered}
	for _, p := range ps.list {
		b, okB := before[p.Name]
		a, okA := after[p.Name]
		if p.PID == 0 || !okB || !okA {
			continue
		}
		pc := ProcCost{Name: p.Name, PID: p.PID, CPUSeconds: round3(a - b)}
		if delivered > 0 {
			pc.CPUSecondsPer1000 = round3((a - b) * 1000 / float64(delivered))
		}
		rss, _ := peakRSSMB(p.PID)
		pc.PeakRSSMB = round3(rss)
		c.CPUSecondsPer1000 = round3(c.CPUSecondsPer1000 + pc.CPUSecondsPer1000)
		c.Processes = append(c.Processes, pc)
	}
	return c
}

func urlPort(raw string) int {
	u, err := url.Parse(raw)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(u.Port())
	return p
}

func addrPort(addr string) int {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(port)
	return p
}

// pause stops the named process (SIGSTOP) and returns the function that
// lets it go on (SIGCONT).
func (p *processes) pause(name string) (func(), error) {
	for _, pr := range p.list {
		if pr.Name == name && pr.PID > 0 {
			if err := syscall.Kill(pr.PID, syscall.SIGSTOP); err != nil {
				return nil, fmt.Errorf("pausing the %s (pid %d): %w", name, pr.PID, err)
			}
			step("paused the %s (pid %d) for the ingest section", name, pr.PID)
			return func() { _ = syscall.Kill(pr.PID, syscall.SIGCONT) }, nil
		}
	}
	return nil, fmt.Errorf("no %s process found to pause", name)
}
