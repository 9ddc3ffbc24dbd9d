package main

import (
	"errors"
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
	// Tree counts the process's children too: PostgreSQL's backends and
	// background workers, the Erlang VM's helpers. A child that exits is
	// counted in the parent's cutime and cstime once it is reaped, so
	// connections that come and go during a run are not missed.
	Tree bool
}

// processes are the product's own (the API, the worker), the Temporal
// server, and the services the notification passes through: PostgreSQL,
// RabbitMQ and Redis.
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
		service  bool // found by its port only: no --<name>-pid flag
	}{
		{"api", o.APIPid, urlPort(o.API, 0), func(argv []string) bool { return strings.HasSuffix(argv[0], "bin/api") }, false},
		{"worker", o.WorkerPid, urlPort(o.Worker, 0), func(argv []string) bool { return strings.HasSuffix(argv[0], "bin/worker") }, false},
		{"temporal", o.TemporalPid, addrPort(o.Temporal), isTemporalServer, false},
		{"postgres", 0, urlPort(o.DatabaseDSN, 5432), func(argv []string) bool { return filepath.Base(argv[0]) == "postgres" }, true},
		{"rabbitmq", 0, urlPort(o.RabbitMQURL, 5672), func(argv []string) bool { return filepath.Base(argv[0]) == "beam.smp" }, true},
		{"redis", 0, urlPort(o.RedisURL, 6379), func(argv []string) bool { return strings.HasPrefix(filepath.Base(argv[0]), "redis-server") }, true},
	}
	ps := &processes{}
	cmdlines := readCmdlines()
	for _, r := range roles {
		p := process{Name: r.name, PID: r.override, Tree: r.name == "postgres" || r.name == "rabbitmq"}
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
				hint := ""
				if r.override == 0 && !r.service {
					hint = fmt.Sprintf(" (pass --%s-pid)", r.name)
				}
				ps.warnings = append(ps.warnings, fmt.Sprintf("no %s process found in /proc: its cost is not measured%s", r.name, hint))
			case 1:
				p.PID = candidates[0]
			default:
				p.PID = listener(candidates, r.port)
				if p.PID == 0 {
					ps.warnings = append(ps.warnings, fmt.Sprintf("%d %s processes %v and none listens on port %d: its cost is not measured", len(candidates), r.name, candidates, r.port))
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
		out[pid] = splitCmdline(b)
	}
	return out
}

// splitCmdline splits the contents of /proc/<pid>/cmdline, NUL-separated
// arguments with a NUL after the last, into argv.
func splitCmdline(b []byte) []string {
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
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
		for _, link := range listeningSockets(string(b), port) {
			inodes[link] = true
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

// listeningSockets reads a /proc/net/tcp or tcp6 table (a header line, then
// a socket a line) and returns the sockets that listen on port, each as the
// link its holder's /proc/<pid>/fd entry shows: "socket:[<inode>]".
func listeningSockets(table string, port int) []string {
	var out []string
	for _, line := range strings.Split(table, "\n")[1:] {
		fs := strings.Fields(line)
		// sl local_address rem_address st ... inode (10th field); st 0A is LISTEN.
		if len(fs) < 10 || fs[3] != "0A" {
			continue
		}
		_, hexPort, _ := strings.Cut(fs[1], ":")
		if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(p) == port {
			out = append(out, "socket:["+fs[9]+"]")
		}
	}
	return out
}

// sample reads each found process's CPU seconds so far (with its
// children's, for a tree).
func (ps *processes) sample() procSample {
	s := procSample{}
	var children map[int][]int
	for _, p := range ps.list {
		if p.PID == 0 {
			continue
		}
		st, err := readStat(p.PID)
		if err != nil {
			continue
		}
		cpu := st.cpu()
		if p.Tree {
			if children == nil {
				children = childrenOf()
			}
			// Reaped children are in the parent's cutime and cstime; live
			// ones (and theirs) are read one by one.
			cpu += st.childCPU()
			for _, c := range descendants(children, p.PID) {
				if cs, err := readStat(c); err == nil {
					cpu += cs.cpu()
				}
			}
		}
		s[p.Name] = cpu
	}
	return s
}

// stat is what the cost reads of /proc/<pid>/stat.
type stat struct {
	ppid                         int
	utime, stime, cutime, cstime uint64
}

func (s stat) cpu() float64      { return float64(s.utime+s.stime) / clockTicks }
func (s stat) childCPU() float64 { return float64(s.cutime+s.cstime) / clockTicks }

// readStat reads /proc/<pid>/stat.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	st, err := parseStat(b)
	if err != nil {
		return stat{}, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return st, nil
}

// errStatFormat is what parseStat says of a line it cannot read.
var errStatFormat = errors.New("unexpected format")

// parseStat parses the contents of /proc/<pid>/stat.
func parseStat(b []byte) (stat, error) {
	// The command name (field 2) may hold spaces; the fields after it start
	// with the state (field 3), so ppid (4) is at 1, utime (14) to cstime
	// (17) at 11 to 14.
	i := strings.LastIndex(string(b), ") ")
	if i < 0 {
		return stat{}, errStatFormat
	}
	fs := strings.Fields(string(b)[i+2:])
	if len(fs) < 15 {
		return stat{}, errStatFormat
	}
	var n [5]uint64
	for k, f := range []string{fs[1], fs[11], fs[12], fs[13], fs[14]} {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return stat{}, errStatFormat
		}
		n[k] = v
	}
	return stat{ppid: int(n[0]), utime: n[1], stime: n[2], cutime: n[3], cstime: n[4]}, nil
}

// childrenOf maps each process to its live children.
func childrenOf() map[int][]int {
	out := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil {
			out[st.ppid] = append(out[st.ppid], pid)
		}
	}
	return out
}

// descendants lists pid's live children, their children, and so on.
func descendants(children map[int][]int, pid int) []int {
	var out []int
	queue := slices.Clone(children[pid])
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		out = append(out, c)
		queue = append(queue, children[c]...)
	}
	return out
}

// peakRSSMB is VmHWM of pid (the resident set's high-water mark since the
// process started), in MiB.
func peakRSSMB(pid int) (float64, error) { return statusMB(pid, "VmHWM:") }

// statusMB reads a kB field of /proc/<pid>/status, in MiB.
func statusMB(pid int, field string) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	mb, err := kBFieldMB(string(b), field)
	switch {
	case errors.Is(err, errNoField):
		return 0, fmt.Errorf("/proc/%d/status has no %s", pid, field)
	case err != nil:
		return 0, fmt.Errorf("/proc/%d/status: %w", pid, err)
	}
	return mb, nil
}

// errNoField is kBFieldMB's answer when no line holds the field.
var errNoField = errors.New("no such field")

// kBFieldMB finds the first line of a /proc file ("status", "smaps_rollup")
// that starts with field (with its colon: "VmHWM:") and returns its value,
// in kB there, in MiB.
func kBFieldMB(text, field string) (float64, error) {
	for line := range strings.SplitSeq(text, "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("%s %w", field, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, errNoField
}

// treePSSMB is the proportional set size of pid and its live descendants
// now, in MiB: shared memory (PostgreSQL's shared buffers) counted once
// across the tree, not once per backend as VmHWM would.
func treePSSMB(pid int) float64 {
	total := 0.0
	for _, p := range append([]int{pid}, descendants(childrenOf(), pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", p))
		if err != nil {
			continue
		}
		// A kernel without the field, or a value that does not parse,
		// counts 0 for that process.
		mb, _ := kBFieldMB(string(b), "Pss:")
		total += mb
	}
	return total
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
		if p.Tree {
			rss = treePSSMB(p.PID)
		}
		pc.PeakRSSMB = round3(rss)
		c.CPUSecondsPer1000 = round3(c.CPUSecondsPer1000 + pc.CPUSecondsPer1000)
		c.Processes = append(c.Processes, pc)
	}
	return c
}

// urlPort is the port of a URL or DSN, def when it names none.
func urlPort(raw string, def int) int {
	u, err := url.Parse(raw)
	if err != nil {
		return def
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		return def
	}
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
