package testenv

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// EnvKafkaLibs is the directory of the Apache Kafka jars deploy/dev/up runs
// its brokers from (deploy/dev/.cache/kafka-VERSION). When it is not set,
// PrivateKafka looks for that cache in the module's deploy/dev, then in the
// main worktree's.
const EnvKafkaLibs = "RESIDENCY_TEST_KAFKA_LIBS"

// PrivateKafka is a single-node KRaft Apache Kafka cluster of one test's own:
// the test may kill it and start it again on the same port and data
// directory (a cluster outage) without touching the shared dev stack.
type PrivateKafka struct {
	// Kafka is the cluster as the other helpers see it (Brokers, Topic).
	Kafka

	t     testing.TB
	dir   string
	libs  string
	port  int
	cport int

	mu  sync.Mutex
	cmd *exec.Cmd
}

// NewPrivateKafka formats and starts a private broker and waits until it
// answers metadata requests. It is killed when the test ends. Under -short,
// or without the dev stack's Kafka jars, the test is skipped outside CI and
// fails under CI=true.
func NewPrivateKafka(t testing.TB, name string) *PrivateKafka {
	t.Helper()
	return NewPrivateKafkas(t, name)[0]
}

// NewPrivateKafkas starts one private broker per name, side by side (a JVM
// start is most of their cost), as NewPrivateKafka does.
func NewPrivateKafkas(t testing.TB, names ...string) []*PrivateKafka {
	t.Helper()
	if testing.Short() && !CI() {
		t.Skip("testenv: a private Kafka broker is not started under -short")
	}
	libs, err := kafkaLibs()
	if err != nil {
		if CI() {
			t.Fatalf("testenv: a private Kafka broker needs the dev stack's jars: %v; %s", err, startHint)
		}
		t.Skipf("testenv: no private Kafka broker: %v; %s", err, startHint)
	}
	if _, err := exec.LookPath("java"); err != nil {
		if CI() {
			t.Fatalf("testenv: a private Kafka broker needs java: %v", err)
		}
		t.Skipf("testenv: no private Kafka broker: %v", err)
	}
	ks := make([]*PrivateKafka, len(names))
	for i, name := range names {
		dir, err := os.MkdirTemp("", "residency-private-kafka-")
		if err != nil {
			t.Fatalf("testenv: private kafka dir: %v", err)
		}
		k := &PrivateKafka{t: t, dir: dir, libs: libs, port: freePort(t), cport: freePort(t)}
		k.Name = name
		k.Real = true
		k.Version = filepath.Base(libs)
		k.Brokers = []string{fmt.Sprintf("127.0.0.1:%d", k.port)}
		t.Cleanup(func() {
			k.Kill()
			_ = os.RemoveAll(dir)
		})
		if err := k.writeConfig(); err != nil {
			t.Fatalf("testenv: private kafka: %v", err)
		}
		ks[i] = k
	}
	errs := make([]error, len(ks))
	var wg sync.WaitGroup
	for i, k := range ks {
		wg.Go(func() {
			if errs[i] = k.format(); errs[i] == nil {
				errs[i] = k.start()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("testenv: private kafka: %v", err)
		}
	}
	return ks
}

// Start starts the broker (again, after Kill) on the same port and data
// directory and waits until it answers metadata requests.
func (k *PrivateKafka) Start() {
	k.t.Helper()
	if err := k.start(); err != nil {
		k.t.Fatalf("testenv: %v", err)
	}
}

// start is Start returning its error (safe off the test's goroutine).
func (k *PrivateKafka) start() error {
	k.mu.Lock()
	if k.cmd != nil {
		k.mu.Unlock()
		return nil
	}
	log, err := os.OpenFile(filepath.Join(k.dir, "server.out"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		k.mu.Unlock()
		return fmt.Errorf("private kafka log: %w", err)
	}
	cmd := exec.Command("java", "-server", "-Xms64m", "-Xmx256m", "-XX:+UseG1GC", "-XX:TieredStopAtLevel=1",
		"-Xshare:auto", "-Djava.awt.headless=true",
		"-Dlog4j2.configurationFile="+filepath.Join(k.dir, "log4j2.properties"),
		"-cp", filepath.Join(k.libs, "*"), "kafka.Kafka", filepath.Join(k.dir, "server.properties"))
	cmd.Stdout, cmd.Stderr = log, log
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		k.mu.Unlock()
		_ = log.Close()
		return fmt.Errorf("start private kafka: %w", err)
	}
	k.cmd = cmd
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = log.Close(); close(exited) }()
	k.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A transport of its own: the default one caches metadata, which would
	// answer for a broker that is not up yet.
	tr := &kafka.Transport{MetadataTTL: time.Millisecond}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(k.Brokers...), Timeout: 2 * time.Second, Transport: tr}
	began := time.Now()
	for {
		if md, err := c.Metadata(ctx, &kafka.MetadataRequest{}); err == nil && len(md.Brokers) > 0 {
			k.t.Logf("testenv: private kafka %s up on %s in %s", k.Name, k.Brokers[0], time.Since(began).Round(time.Millisecond))
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("private kafka %s exited on start; its log:\n%s", k.Name, k.tail())
		case <-ctx.Done():
			return fmt.Errorf("private kafka %s does not answer within 60s; its log:\n%s", k.Name, k.tail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill stops the broker with SIGKILL (a crash, no clean shutdown) and waits
// until its port is closed. It does nothing if the broker is not running.
func (k *PrivateKafka) Kill() {
	k.mu.Lock()
	cmd := k.cmd
	k.cmd = nil
	k.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	killProcessGroup(cmd)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", k.Brokers[0], 200*time.Millisecond); err != nil {
			return
		} else {
			_ = c.Close()
		}
	}
}

func (k *PrivateKafka) tail() string {
	b, _ := os.ReadFile(filepath.Join(k.dir, "server.out"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (k *PrivateKafka) writeConfig() error {
	props := fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[2]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,CONTROLLER://127.0.0.1:%[2]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=%[3]s
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
broker.heartbeat.interval.ms=200
broker.session.timeout.ms=1000
auto.create.topics.enable=false
delete.topic.enable=true
log.flush.interval.messages=1
`, k.port, k.cport, filepath.Join(k.dir, "data"))
	log4j := fmt.Sprintf(`rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=%s
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%%d] %%p %%m (%%c)%%n
`, filepath.Join(k.dir, "server.log"))
	if err := os.WriteFile(filepath.Join(k.dir, "server.properties"), []byte(props), 0o644); err != nil {
		return fmt.Errorf("write server.properties: %w", err)
	}
	if err := os.WriteFile(filepath.Join(k.dir, "log4j2.properties"), []byte(log4j), 0o644); err != nil {
		return fmt.Errorf("write log4j2.properties: %w", err)
	}
	return nil
}

func (k *PrivateKafka) format() error {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("cluster id: %w", err)
	}
	id := base64.RawURLEncoding.EncodeToString(b[:])
	if strings.HasPrefix(id, "-") {
		id = "A" + id[1:]
	}
	cmd := exec.Command("java", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
		"-Dlog4j2.configurationFile="+filepath.Join(k.dir, "log4j2.properties"),
		"-cp", filepath.Join(k.libs, "*"), "kafka.tools.StorageTool", "format",
		"--cluster-id", id, "--config", filepath.Join(k.dir, "server.properties"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("storage format: %w: %s", err, out)
	}
	return nil
}

// kafkaLibs finds the directory of Kafka jars: EnvKafkaLibs, or the dev
// stack's cache in this module, or in the main worktree when this is a
// linked git worktree.
func kafkaLibs() (string, error) {
	if v, ok := lookup(EnvKafkaLibs); ok {
		if hasJars(v) {
			return v, nil
		}
		return "", fmt.Errorf("%s=%s holds no jars", EnvKafkaLibs, v)
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	roots := []string{root}
	if main, ok := mainWorktree(root); ok {
		roots = append(roots, main)
	}
	for _, r := range roots {
		dirs, _ := filepath.Glob(filepath.Join(r, "deploy", "dev", ".cache", "kafka-*"))
		for i := len(dirs) - 1; i >= 0; i-- {
			if hasJars(dirs[i]) {
				return dirs[i], nil
			}
		}
	}
	return "", fmt.Errorf("no deploy/dev/.cache/kafka-* with jars under %s (set %s)", strings.Join(roots, " or "), EnvKafkaLibs)
}

func hasJars(dir string) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "kafka_*.jar"))
	return len(m) > 0
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// mainWorktree returns the main worktree's root when root is a linked git
// worktree (its .git is a file naming the gitdir).
func mainWorktree(root string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(root, ".git"))
	if err != nil {
		return "", false
	}
	gitdir, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: ")
	if !ok {
		return "", false
	}
	common, err := os.ReadFile(filepath.Join(gitdir, "commondir"))
	if err != nil {
		return "", false
	}
	c := strings.TrimSpace(string(common))
	if !filepath.IsAbs(c) {
		c = filepath.Join(gitdir, c)
	}
	return filepath.Dir(filepath.Clean(c)), true
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testenv: free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
