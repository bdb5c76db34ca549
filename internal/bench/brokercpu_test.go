package bench

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchParseProcStat: utime and stime are fields 14 and 15 counted after
// the command name, which may hold spaces and parentheses.
func TestBenchParseProcStat(t *testing.T) {
	tail := " S 1 4858 4858 0 -1 4194560 123 0 0 0 %d %d 0 0 20 0 97 0 1234 5000000 1000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0\n"
	for _, c := range []struct {
		comm   string
		ut, st uint64
	}{{"java", 4711, 815}, {"a b", 1, 2}, {"x) (y", 0, 0}, {"((", 9, 9}, {") S 1 2 3 4 5 6 7 8 9 10 11 12", 12345678901, 7}} {
		data := []byte("4858 (" + c.comm + ")" + strings.Replace(strings.Replace(tail, "%d", strconv.FormatUint(c.ut, 10), 1), "%d", strconv.FormatUint(c.st, 10), 1))
		got, err := parseProcStat(data)
		if err != nil || got.Comm != c.comm || got.UTime != c.ut || got.STime != c.st {
			t.Errorf("parseProcStat(%q) = %+v, %v; want comm %q, utime %d, stime %d", data, got, err, c.comm, c.ut, c.st)
		}
	}
	for _, bad := range []string{"", "4858 java S 1", "4858 (java S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15", "4858 (java) S 1 2 3 4 5 6 7 8 9 10",
		"4858 (java) S 1 2 3 4 5 6 7 8 9 10 x 2", "4858 (java) S 1 2 3 4 5 6 7 8 9 10 1 -2", ")( 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15"} {
		if got, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("parseProcStat(%q) = %+v, want an error", bad, got)
		}
	}
}

// TestBenchProcessCPUTicks reads this process's own CPU time as a broker's
// would be, and fails on a process that does not exist.
func TestBenchProcessCPUTicks(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := processCPUTicks(os.Getpid()); err == nil {
			t.Errorf("processCPUTicks on %s: want an error (no /proc)", runtime.GOOS)
		}
		t.Skip("the CPU time of another process is read on Linux only")
	}
	if tk := clockTicksPerSecond(); tk <= 0 {
		t.Fatalf("clock ticks per second %d", tk)
	}
	before, err := processCPUTicks(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	spinCPU(0.1)
	after, err := processCPUTicks(os.Getpid())
	if spun := float64(after-before) / float64(clockTicksPerSecond()); err != nil || spun < 0.05 || spun > 5 {
		t.Errorf("CPU seconds %v then, after 100ms spinning, %v (%v)", before, after, err)
	}
	if _, err := processCPUTicks(1 << 30); err == nil || !strings.Contains(err.Error(), "no process 1073741824") {
		t.Errorf("processCPUTicks(no such pid) = %v", err)
	}
}

// TestBenchMeterReadsTheBroker: with a broker pid the meter reads its CPU at
// the first fetch and at the last commit; a pid it cannot read fails the
// run.
func TestBenchMeterReadsTheBroker(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the CPU time of another process is read on Linux only")
	}
	m := newMeter(10, os.Getpid())
	m.fetched()
	spinCPU(0.1)
	m.commit(10)
	res, err := m.result(contenderRouter)
	if err != nil || res.BrokerCPUSeconds < 0.05 || res.BrokerCPUSeconds > 5 {
		t.Errorf("result %+v, %v: want the 100ms spun as the broker's CPU", res, err)
	}
	if res, err := newMeterRun(0); err != nil || res.BrokerCPUSeconds != 0 {
		t.Errorf("without a broker pid: %+v, %v", res, err)
	}
	if _, err := newMeterRun(1 << 30); err == nil || !strings.Contains(err.Error(), "--broker-pid 1073741824") {
		t.Errorf("with a pid that does not exist: %v, want an error naming --broker-pid", err)
	}
}

func newMeterRun(pid int) (childResult, error) {
	m := newMeter(1, pid)
	m.fetched()
	m.commit(1)
	return m.result(contenderFranzGo)
}

// TestBenchListenInodes picks the listening sockets of a port out of
// /proc/net/tcp and /proc/net/tcp6.
func TestBenchListenInodes(t *testing.T) {
	tcp := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:4A84 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:4A84 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1
   2: 00000000:4A85 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1 0000000000000000 100 0 0 10 0
`
	tcp6 := `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:4A84 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 444 1 0000000000000000 100 0 0 10 0
`
	if got := listenInodes([]byte(tcp), 19076); len(got) != 1 || got[0] != 111 {
		t.Errorf("tcp, port 19076: %v, want [111] (222 is a connection, 333 another port)", got)
	}
	if got := listenInodes([]byte(tcp6), 19076); len(got) != 1 || got[0] != 444 {
		t.Errorf("tcp6, port 19076: %v, want [444]", got)
	}
	if got := listenInodes([]byte(tcp), 1); len(got) != 0 {
		t.Errorf("port 1: %v", got)
	}
}

// TestBenchFindBrokerPID: --broker-pid auto finds this process listening on a
// port of its own, and says why when it cannot.
func TestBenchFindBrokerPID(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("--broker-pid auto reads Linux's /proc")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if pid, err := FindBrokerPID(l.Addr().String()); err != nil || pid != os.Getpid() {
		t.Errorf("FindBrokerPID(%s) = %d, %v; want this process, %d", l.Addr(), pid, err, os.Getpid())
	}
	port := l.Addr().(*net.TCPAddr).Port
	if pid, err := FindBrokerPID("localhost:" + strconv.Itoa(port)); err != nil || pid != os.Getpid() {
		t.Errorf("FindBrokerPID(localhost:%d) = %d, %v", port, pid, err)
	}
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	for addr, want := range map[string]string{
		freeAddr:          "no socket of this host listens on port",
		"192.0.2.1:9092":  "192.0.2.1 is not an address of this host",
		"127.0.0.1":       "missing port",
		"127.0.0.1:x":     "bad port",
		"127.0.0.1:70000": "bad port",
	} {
		if pid, err := FindBrokerPID(addr); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("FindBrokerPID(%q) = %d, %v; want an error with %q", addr, pid, err, want)
		}
	}
}

// TestBenchValidateBrokerPID: Validate refuses a --broker-pid that is negative,
// given without --brokers or not a process whose CPU time can be read.
func TestBenchValidateBrokerPID(t *testing.T) {
	for _, c := range []struct {
		pid     int
		brokers []string
		want    string
	}{
		{-1, []string{"127.0.0.1:1"}, "--broker-pid must be a process id"},
		{os.Getpid(), nil, "--broker-pid needs --brokers"},
		{1 << 30, []string{"127.0.0.1:1"}, "--broker-pid 1073741824: "},
	} {
		o := DefaultOptions()
		o.BrokerPID, o.Brokers = c.pid, c.brokers
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(--broker-pid %d, --brokers %v) = %v, want %q", c.pid, c.brokers, err, c.want)
		}
	}
	if runtime.GOOS == "linux" {
		o := DefaultOptions()
		o.BrokerPID, o.Brokers = os.Getpid(), []string{"127.0.0.1:1"}
		if err := o.Validate(); err != nil {
			t.Errorf("Validate(--broker-pid of this process): %v", err)
		}
	}
}

// TestBenchReportBrokerCPU: with --broker-pid the table has the broker's
// column and a broker + contender line per contender, and the JSON the
// broker's figures; without, neither.
func TestBenchReportBrokerCPU(t *testing.T) {
	r := reportWith(100_000, 200_000, 6, 2, 10, 50)
	r.Events = 100_000
	r.FranzGo.RoundBrokerCPUMicrosPerEvent = []float64{0.8, 1.0}
	r.Router.RoundBrokerCPUMicrosPerEvent = []float64{3.0, 3.5}
	r.Router.RoundEventsPerSecond, r.FranzGo.RoundEventsPerSecond = []float64{100_000, 100_000}, []float64{200_000, 200_000}
	r.Router.RoundCPUSecondsPerMillion, r.FranzGo.RoundCPUSecondsPerMillion = []float64{6, 6}, []float64{2, 2}
	r.derive()
	if r.Router.BrokerCPUMicrosPerEvent != 3.25 || r.Router.BrokerPlusCPUMicrosPerEvent != 9.25 || r.FranzGo.BrokerCPUMicrosPerEvent != 0.9 || r.FranzGo.BrokerPlusCPUMicrosPerEvent != 2.9 {
		t.Fatalf("derived: router %+v, franz-go %+v", r.Router, r.FranzGo)
	}
	without := *r
	without.Router.RoundBrokerCPUMicrosPerEvent, without.FranzGo.RoundBrokerCPUMicrosPerEvent = nil, nil
	without.Router.Latency, without.FranzGo.Latency = nil, nil
	without.derive()
	r.BrokerPID, r.BrokerCommand, r.BrokerClockTicks = 4858, "java", 100
	r.checkTargets()
	without.checkTargets()

	var out bytes.Buffer
	r.Table(&out)
	table := out.String()
	for _, want := range []string{"BROKER CPU µs/EVENT", "Broker CPU: process 4858 (java), user+system from /proc/4858/stat",
		"resolution 0.100 µs per event (one 1/100 s tick over 100000 events)", "the latency passes are not measured",
		"Broker + contender CPU per event, franz-go: 2.90 µs (broker 0.90, per round: 0.80, 1.00; franz-go 2.00)",
		"Broker + contender CPU per event, router: 9.25 µs (broker 3.25, per round: 3.00, 3.50; router 6.00)"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	header, row := lineWith(table, "CONTENDER"), lineWith(table, "router ")
	if strings.Index(header, "BROKER CPU µs/EVENT") < strings.Index(header, "CPU µs/EVENT ") || !strings.Contains(row, " 3.25 ") {
		t.Errorf("header %q, router row %q: want the broker's column after the contender's CPU", header, row)
	}
	out.Reset()
	without.Table(&out)
	if strings.Contains(out.String(), "BROKER") || strings.Contains(out.String(), "Broker") {
		t.Errorf("table without --broker-pid:\n%s", out.String())
	}

	keys := func(r *Report) (map[string]any, map[string]any) {
		data, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatal(err)
		}
		router, _ := m["router"].(map[string]any)
		return m, router
	}
	top, router := keys(r)
	if top["broker_pid"] != 4858.0 || top["broker_command"] != "java" || top["broker_clock_ticks_per_second"] != 100.0 ||
		router["broker_cpu_us_per_event"] != 3.25 || router["broker_plus_contender_cpu_us_per_event"] != 9.25 {
		t.Errorf("JSON with --broker-pid: %v\nrouter: %v", top, router)
	}
	if rounds, _ := router["round_broker_cpu_us_per_event"].([]any); len(rounds) != 2 || rounds[0] != 3.0 || rounds[1] != 3.5 {
		t.Errorf("JSON round_broker_cpu_us_per_event %v", router["round_broker_cpu_us_per_event"])
	}
	if back := benchJSONOf(t, r); back.Router.BrokerCPUMicrosPerEvent != 3.25 || back.BrokerPID != 4858 {
		t.Errorf("read back: %+v", back)
	}
	top, router = keys(&without)
	for _, k := range []string{"broker_pid", "broker_command", "broker_clock_ticks_per_second"} {
		if _, ok := top[k]; ok {
			t.Errorf("JSON without --broker-pid has %s", k)
		}
	}
	for _, k := range []string{"broker_cpu_us_per_event", "round_broker_cpu_us_per_event", "broker_plus_contender_cpu_us_per_event"} {
		if _, ok := router[k]; ok {
			t.Errorf("JSON without --broker-pid has router.%s", k)
		}
	}
}

// lineWith is the first line of s that holds sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// spinCPU spins until this process has used seconds of CPU (not of wall
// time: on a loaded host a spinning goroutine gets a fraction of a core),
// for at most 20 seconds.
func spinCPU(seconds float64) {
	for start, deadline := cpuSeconds(), time.Now().Add(20*time.Second); cpuSeconds()-start < seconds && time.Now().Before(deadline); {
	}
}
