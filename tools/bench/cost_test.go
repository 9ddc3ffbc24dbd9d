package main

import (
	"fmt"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseStatReadsPPIDAndCPUTimes(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		want stat
	}{
		{
			name: "a plain command name",
			line: "1234 (postgres) S 1 1234 1234 0 -1 4194560 1500 0 0 0 250 120 30 40 20 0 1 0 5000 100000 200 18446744073709551615\n",
			want: stat{ppid: 1, utime: 250, stime: 120, cutime: 30, cstime: 40},
		},
		{
			name: "a command name with spaces and a parenthesis",
			line: "42 (tricky name) x) R 7 42 42 0 -1 0 0 0 0 0 9 8 7 6 20 0 1 0\n",
			want: stat{ppid: 7, utime: 9, stime: 8, cutime: 7, cstime: 6},
		},
		{
			name: "exactly the fields it needs",
			line: "9 (sh) S 3 0 0 0 0 0 0 0 0 0 100 200 0 0",
			want: stat{ppid: 3, utime: 100, stime: 200},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.line))
			require.NoError(t, err)
			require.Equal(t, tc.want, got)
		})
	}
}

func TestParseStatRefusesWhatIsNotAStatLine(t *testing.T) {
	for _, tc := range []struct{ name, line string }{
		{"empty", ""},
		{"no command name in parentheses", "1234 postgres S 1 1234 1234 0 -1 4194560 1500 0 0 0 250 120 30 40"},
		{"too few fields", "1234 (postgres) S 1 1234 1234 0 -1 4194560 1500 0 0 0 250 120 30"},
		{"a time that is not a number", "1234 (postgres) S 1 1234 1234 0 -1 4194560 1500 0 0 0 x 120 30 40"},
		{"a negative child time", "1234 (postgres) S 1 1234 1234 0 -1 4194560 1500 0 0 0 250 120 -1 40"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseStat([]byte(tc.line))
			require.ErrorIs(t, err, errStatFormat)
		})
	}
}

func TestStatCPUIsInSecondsOfClockTicks(t *testing.T) {
	s := stat{utime: 250, stime: 120, cutime: 30, cstime: 40}
	require.InDelta(t, 3.7, s.cpu(), 1e-9)
	require.InDelta(t, 0.7, s.childCPU(), 1e-9)
}

func TestReadStatReadsThisProcess(t *testing.T) {
	st, err := readStat(os.Getpid())
	require.NoError(t, err)
	require.Equal(t, os.Getppid(), st.ppid)

	_, err = readStat(-1)
	require.Error(t, err, "no such process")
}

func TestKBFieldMBReadsAProcFieldInMiB(t *testing.T) {
	status := "Name:\tworker\nVmPeak:\t 1200000 kB\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t12\n"
	smaps := "55d0c7a4e000-7ffd3a1f2000 ---p 00000000 00:00 0    [rollup]\n" +
		"Rss:               10240 kB\nPss:                5120 kB\nPss_Dirty:          1024 kB\nPss_Anon:           2048 kB\n"
	for _, tc := range []struct {
		name, text, field string
		want              float64
	}{
		{"peak RSS", status, "VmHWM:", 200},
		{"RSS now", status, "VmRSS:", 100},
		{"PSS, not the Pss_ lines after it", smaps, "Pss:", 5},
		{"a fraction of a MiB", "VmRSS:\t512 kB\n", "VmRSS:", 0.5},
		{"no unit", "VmRSS: 1024\n", "VmRSS:", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kBFieldMB(tc.text, tc.field)
			require.NoError(t, err)
			require.InDelta(t, tc.want, got, 1e-9)
		})
	}

	_, err := kBFieldMB(status, "VmSwap:")
	require.ErrorIs(t, err, errNoField)
	_, err = kBFieldMB("VmHWM:\tlots kB\n", "VmHWM:")
	require.Error(t, err)
	require.NotErrorIs(t, err, errNoField)
}

func TestStatusMBReadsThisProcess(t *testing.T) {
	rss, err := rssMB(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, rss, 0.0)
	peak, err := peakRSSMB(os.Getpid())
	require.NoError(t, err)
	require.GreaterOrEqual(t, peak, rss, "the high-water mark is at least the RSS now")

	_, err = statusMB(os.Getpid(), "NoSuchField:")
	require.EqualError(t, err, fmt.Sprintf("/proc/%d/status has no NoSuchField:", os.Getpid()))
}

func TestListeningSocketsFindsTheListenersOnAPort(t *testing.T) {
	// /proc/net/tcp: the ports are hex (1F90 = 8080, 1C41 = 7233); state 0A
	// is LISTEN, 01 ESTABLISHED; the inode is the tenth field.
	tcp := "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123456 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 0100007F:1F90 0100007F:D2F4 01 00000000:00000000 00:00000000 00000000     0        0 123999 1 0000000000000000 20 4 30 10 -1\n" +
		"   2: 00000000:1C41 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0\n" +
		"   3: 0100007F:1F90 00000000:0000 0A\n"
	tcp6 := "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
		"   0: 00000000000000000000000000000000:1C41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0000000000000000 100 0 0 10 0\n"
	for _, tc := range []struct {
		name  string
		table string
		port  int
		want  []string
	}{
		{"the listener, not a connection to it nor a cut line", tcp, 8080, []string{"socket:[123456]"}},
		{"another port", tcp, 7233, []string{"socket:[777]"}},
		{"IPv6", tcp6, 7233, []string{"socket:[555]"}},
		{"nobody listens", tcp, 9090, nil},
		{"an empty table", "", 8080, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, listeningSockets(tc.table, tc.port))
		})
	}
}

func TestSplitCmdlineAndIsTemporalServer(t *testing.T) {
	argv := splitCmdline([]byte("/work/.tools/bin/temporal\x00server\x00start-dev\x00--db-filename\x00/tmp/a b.db\x00"))
	require.Equal(t, []string{"/work/.tools/bin/temporal", "server", "start-dev", "--db-filename", "/tmp/a b.db"}, argv)

	for _, tc := range []struct {
		argv []string
		want bool
	}{
		{[]string{"/x/.tools/bin/temporal", "server", "start-dev", "--port", "7233"}, true},
		{[]string{"/x/.tools/bin/temporal-server", "--env", "development", "start"}, true},
		{[]string{"temporal-server-1.29", "start"}, true},
		{[]string{"/x/.tools/bin/temporal", "workflow", "list"}, false},
		{[]string{"/x/.tools/bin/temporal", "server", "start"}, false},
		{[]string{"/x/.tools/bin/temporal-server", "migrate"}, false},
		{[]string{"/usr/bin/temporal-ui-server", "start"}, false},
		{[]string{"bin/worker"}, false},
	} {
		require.Equal(t, tc.want, isTemporalServer(tc.argv), "%q", tc.argv)
	}
}

func TestURLPortAndAddrPort(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want int
	}{
		{"http://127.0.0.1:8080", 8080},
		{"http://127.0.0.1:8081/readyz", 8081},
		{"postgres://postgres@127.0.0.1:5432/dispatch?sslmode=disable", 5432},
		{"amqp://guest:guest@127.0.0.1:5672/", 5672},
		{"redis://127.0.0.1:6379/0", 6379},
		{"http://[::1]:9090", 9090},
		{"http://localhost", -1},
		{"::not a url", -1},
	} {
		require.Equal(t, tc.want, urlPort(tc.raw, -1), tc.raw)
	}
	for _, tc := range []struct {
		addr string
		want int
	}{
		{"127.0.0.1:7233", 7233},
		{"[::1]:7233", 7233},
		{"localhost:http", 0},
		{"7233", 0},
		{"", 0},
	} {
		require.Equal(t, tc.want, addrPort(tc.addr), tc.addr)
	}
}

func TestDescendantsWalksTheTreeBreadthFirst(t *testing.T) {
	children := map[int][]int{1: {10, 11}, 10: {100}, 11: {110, 111}, 100: {1000}, 2: {20}}
	require.Equal(t, []int{10, 11, 100, 110, 111, 1000}, descendants(children, 1))
	require.Equal(t, []int{1000}, descendants(children, 100))
	require.Nil(t, descendants(children, 1000))
}
