//go:build chaos

// Package chaos is the fault suite (make chaos): each scenario streams
// notifications through the real api and worker binaries while a fault
// strikes (a process killed, a service restarted or stopped, the provider
// hanging), waits until everything is quiet, and checks the promise: every
// notification that got a 2xx is DELIVERED, CANCELLED or FAILED with a
// reason; the provider saw every DELIVERED one, always under its own
// webhook-id; the outbox is empty and the queues are drained.
//
// The services it breaks are its own: a PostgreSQL cluster, a Redis, a
// RabbitMQ node and a Temporal dev server on ports of their own, started and
// stopped by scripts/chaos-services.sh by the pid each wrote, so the
// machine's services are never touched.
package chaos

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// The suite's own services, on ports apart from the machine's.
const (
	postgresPort = 55432
	redisPort    = 56379
	rabbitmqPort = 55672
	temporalPort = 57233
)

var (
	root     string
	binDir   string
	stateDir string

	reportMu sync.Mutex
	report   []result
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	var err error
	if root, err = testenv.RepoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if binDir, err = os.MkdirTemp("", "dispatch-chaos-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(binDir) }()
	if stateDir, err = os.MkdirTemp("", "dispatch-chaos-"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = os.RemoveAll(stateDir) }()
	// The PostgreSQL server runs as the postgres user and must reach its
	// data directory.
	_ = os.Chmod(stateDir, 0o755)

	build := exec.Command("go", "build", "-o", binDir+string(os.PathSeparator), "./cmd/api", "./cmd/worker")
	build.Dir = root
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building binaries:", err)
		return 1
	}

	for _, port := range []int{postgresPort, redisPort, rabbitmqPort, rabbitmqPort - 10000, temporalPort} {
		if portInUse(port) {
			fmt.Fprintf(os.Stderr, "port %d is taken: the fault suite runs its own services there\n", port)
			return 1
		}
	}
	defer func() {
		if err := services("stop-all"); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the suite's services:", err)
		}
	}()
	for _, svc := range []string{"postgres", "redis", "rabbitmq", "temporal"} {
		if err := services("start", svc); err != nil {
			fmt.Fprintf(os.Stderr, "starting the suite's %s: %v\n", svc, err)
			return 1
		}
	}
	// testenv's per-test database, queue and key prefixes, on these services.
	for _, kv := range [][2]string{
		{"TEST_SERVICES", "loopback"},
		{"TEST_POSTGRES_DSN", fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", postgresPort)},
		{"TEST_RABBITMQ_URL", fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", rabbitmqPort)},
		{"TEST_REDIS_URL", fmt.Sprintf("redis://127.0.0.1:%d/0", redisPort)},
	} {
		if err := os.Setenv(kv[0], kv[1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}

	code := m.Run()
	printReport()
	return code
}

// services runs scripts/chaos-services.sh with args against the suite's state.
func services(args ...string) error {
	cmd := exec.Command(filepath.Join(root, "scripts", "chaos-services.sh"), args...)
	cmd.Env = append(os.Environ(),
		"CHAOS_DIR="+stateDir,
		"CHAOS_POSTGRES_PORT="+strconv.Itoa(postgresPort),
		"CHAOS_REDIS_PORT="+strconv.Itoa(redisPort),
		"CHAOS_RABBITMQ_PORT="+strconv.Itoa(rabbitmqPort),
		"CHAOS_TEMPORAL_PORT="+strconv.Itoa(temporalPort),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

func portInUse(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), 200*time.Millisecond)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// result is one scenario's line in the report.
type result struct {
	Scenario string
	Sent     int
	Accepted int
	// AcceptedAfter counts notifications accepted from requests sent after
	// the fault was over.
	AcceptedAfter int
	ClientErrs    int // requests that got no answer (the API was down)
	Refused       int // 503 answers
	Delivered     int
	Failed        int
	Cancelled     int
	Lost          int
	Duplicates    int
	MaxFlight     int
	Quiescence    time.Duration
}

func record(r result) {
	reportMu.Lock()
	defer reportMu.Unlock()
	report = append(report, r)
}

func printReport() {
	reportMu.Lock()
	defer reportMu.Unlock()
	if len(report) == 0 {
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Println("\nFault suite (notifications; requests for 'no answer' and '503'):")
	fmt.Fprintln(w, "scenario\tsent\taccepted\tafter fault\tno answer\t503\tdelivered\tfailed\tcancelled\tlost\tduplicates\tmax in flight\tquiescence\t")
	for _, r := range report {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t\n", r.Scenario, r.Sent, r.Accepted, r.AcceptedAfter, r.ClientErrs,
			r.Refused, r.Delivered, r.Failed, r.Cancelled, r.Lost, r.Duplicates, r.MaxFlight, r.Quiescence.Round(100*time.Millisecond))
	}
	_ = w.Flush()
}
