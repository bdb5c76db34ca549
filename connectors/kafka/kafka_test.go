package kafka_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router"
	"github.com/residency-router/residency/stream"
	"github.com/residency-router/residency/stream/streamtest"
)

func harness(k *testenv.Kafka) streamtest.Harness {
	cluster := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	return streamtest.Harness{
		NewTopic: func(t *testing.T, partitions int) string { return k.Topic(t, "conf", partitions) },
		NewPublisher: func(t *testing.T) stream.Publisher {
			w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cluster})
			if err != nil {
				t.Fatal(err)
			}
			return w
		},
		NewSubscriber: func(t *testing.T, group string, topics ...string) (stream.Subscriber, func()) {
			r, err := kafka.NewReader(kafka.ReaderConfig{Cluster: cluster, GroupID: group, Topics: topics,
				SessionTimeout: 6 * time.Second, RebalanceTimeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			closed := false
			closeFn := func() {
				if !closed {
					closed = true
					_ = r.Close()
				}
			}
			t.Cleanup(closeFn)
			return r, closeFn
		},
		NewGroup: func(t *testing.T) string { return testenv.Name(t, "g") },
		Timeout:  60 * time.Second,
	}
}

func TestConformanceClusterA(t *testing.T) {
	streamtest.TestPubSub(t, harness(testenv.KafkaA(t)))
}

func TestConformanceClusterB(t *testing.T) {
	streamtest.TestPubSub(t, harness(testenv.KafkaB(t)))
}

func TestClusterValidateNamesField(t *testing.T) {
	tests := []struct {
		c    kafka.Cluster
		want string
	}{
		{kafka.Cluster{}, "kafka.clusters.eu.brokers: required"},
		{kafka.Cluster{Brokers: []string{"nohost"}}, "kafka.clusters.eu.brokers[0]"},
		{kafka.Cluster{Brokers: []string{"h:1"}, SASL: kafka.SASL{Mechanism: "gssapi"}}, "kafka.clusters.eu.sasl.mechanism"},
		{kafka.Cluster{Brokers: []string{"h:1"}, SASL: kafka.SASL{Mechanism: "scram-sha-512", Username: "u"}}, "kafka.clusters.eu.sasl.password: required"},
		{kafka.Cluster{Brokers: []string{"h:1"}, TLS: kafka.TLS{Enabled: true, CertFile: "c.pem"}}, "kafka.clusters.eu.tls"},
		// The TLS files are read at validation, and TLS settings without
		// tls.enabled are refused (they would be ignored).
		{kafka.Cluster{Brokers: []string{"h:1"}, TLS: kafka.TLS{Enabled: true, CAFile: "/nonexistent/ca.pem"}}, "kafka.clusters.eu.tls.ca_file: open /nonexistent/ca.pem"},
		{kafka.Cluster{Brokers: []string{"h:1"}, TLS: kafka.TLS{Enabled: true, CAFile: "kafka_test.go"}}, "kafka.clusters.eu.tls.ca_file: kafka_test.go holds no PEM certificate"},
		{kafka.Cluster{Brokers: []string{"h:1"}, TLS: kafka.TLS{Enabled: true, CertFile: "kafka_test.go", KeyFile: "kafka_test.go"}}, "kafka.clusters.eu.tls.cert_file"},
		{kafka.Cluster{Brokers: []string{"h:1"}, TLS: kafka.TLS{CAFile: "ca.pem", ServerName: "k"}}, "kafka.clusters.eu.tls.enabled: false, but kafka.clusters.eu.tls.ca_file, kafka.clusters.eu.tls.server_name are set"},
	}
	for _, tt := range tests {
		err := tt.c.Validate("kafka.clusters.eu")
		if err == nil || !contains(err.Error(), tt.want) {
			t.Errorf("Validate(%+v) = %v, want it to mention %q", tt.c, err, tt.want)
		}
	}
	ok := kafka.Cluster{Brokers: []string{"h:1"}, SASL: kafka.SASL{Mechanism: "SCRAM-SHA-256", Username: "u", Password: "p"}}
	if err := ok.Validate("x"); err != nil {
		t.Errorf("valid cluster: %v", err)
	}
	if _, err := kafka.NewWriter(kafka.WriterConfig{Cluster: ok}); err != nil {
		t.Errorf("writer with scram: %v", err)
	}
	if _, err := kafka.NewWriter(kafka.WriterConfig{Cluster: ok, Compression: "brotli"}); err == nil {
		t.Error("unknown compression accepted")
	}
	if _, err := kafka.NewReader(kafka.ReaderConfig{Cluster: ok, Topics: []string{"t"}}); err == nil {
		t.Error("reader without group accepted")
	}
}

func contains(s, sub string) bool {
	return strings.Contains(s, sub)
}

func TestAdmin(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	a, err := kafka.NewAdmin(cluster)
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.Name(t, "admin")
	if err := a.CreateTopics(ctx, 2, 1, topic); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.CreateTopic(t, topic, 2) }) // registers deletion; the topic exists already
	w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cluster})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var msgs []stream.Message
	for i := range 10 {
		msgs = append(msgs, stream.Message{Topic: topic, Key: []byte{byte(i)}, Value: []byte{byte(i)},
			Headers: []stream.Header{{Key: "h", Value: []byte("v")}}})
	}
	if err := w.Publish(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	got, err := a.ReadAll(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 10 || string(got[0].Headers[0].Value) != "v" {
		t.Fatalf("ReadAll = %d records (%v)", len(got), got)
	}
	lag, err := a.Lag(ctx, testenv.Name(t, "nogroup"), topic)
	if err != nil || lag != 10 {
		t.Fatalf("Lag of a group that read nothing = %d, %v; want 10", lag, err)
	}
	if _, err := a.ReadAll(ctx, "missing_"+topic); err == nil {
		t.Fatal("ReadAll of a missing topic succeeded")
	}
}

func TestTLSConfigFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []kafka.TLS{
		{Enabled: true, CAFile: garbage},
		{Enabled: true, CAFile: filepath.Join(dir, "missing.pem")},
		{Enabled: true, CertFile: garbage, KeyFile: garbage},
	} {
		c := kafka.Cluster{Name: "x", Brokers: []string{"h:1"}, TLS: tc}
		if _, err := kafka.NewWriter(kafka.WriterConfig{Cluster: c}); err == nil {
			t.Errorf("TLS %+v accepted", tc)
		}
		if r, err := kafka.NewReader(kafka.ReaderConfig{Cluster: c, GroupID: "g", Topics: []string{"t"}}); err == nil {
			_ = r.Close()
			t.Errorf("reader with TLS %+v accepted", tc)
		}
	}
	// Closed at once: left open, its group would retry the unreachable
	// broker (allocating, logging) for the rest of the package's tests, and
	// the allocation tests count every goroutine's allocations.
	ok := kafka.Cluster{Name: "x", Brokers: []string{"h:1"}, TLS: kafka.TLS{Enabled: true}, SASL: kafka.SASL{Mechanism: "plain", Username: "u", Password: "p"}}
	r, err := kafka.NewReader(kafka.ReaderConfig{Cluster: ok, GroupID: "g", Topics: []string{"t"}})
	if err != nil {
		t.Fatalf("TLS with the system pool and SASL plain: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// TestWriterChunksAndCompression publishes more than one request's worth of
// records per partition, compressed, and reads every one back once, in
// order per partition, with its headers.
func TestWriterChunksAndCompression(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	cluster := kafka.Cluster{Name: "a", Brokers: k.Brokers}
	topics := []string{k.Topic(t, "chunks", 3), k.Topic(t, "chunks", 1)}
	placed := map[string]string{} // topic/partition/offset: value
	for _, codec := range []string{"none", "lz4", "zstd"} {
		w, err := kafka.NewWriter(kafka.WriterConfig{Cluster: cluster, BatchSize: 50, BatchBytes: 32 << 10,
			MaxRequestBytes: 64 << 10, Compression: codec})
		if err != nil {
			t.Fatal(err)
		}
		var msgs []stream.Message
		for i := range 600 {
			msgs = append(msgs, stream.Message{Topic: topics[i%2], Key: fmt.Appendf(nil, "user-%d", i%17),
				Value:   append(fmt.Appendf(nil, "%s-%04d-", codec, i), make([]byte, 900)...),
				Headers: []stream.Header{{Key: "seq", Value: fmt.Appendf(nil, "%d", i)}}})
		}
		// PublishPlaced says where each record went: checked below.
		parts, offs := make([]int32, len(msgs)), make([]int64, len(msgs))
		if err := w.PublishPlaced(ctx, parts, offs, msgs...); err != nil {
			t.Fatalf("%s: %v", codec, err)
		}
		for i := range msgs {
			placed[fmt.Sprintf("%s/%d/%d", msgs[i].Topic, parts[i], offs[i])] = string(msgs[i].Value)
		}
		_ = w.Close()
	}
	if len(placed) != 1800 {
		t.Fatalf("1800 records placed at %d distinct coordinates", len(placed))
	}
	a, err := kafka.NewAdmin(cluster)
	if err != nil {
		t.Fatal(err)
	}
	for ti, topic := range topics {
		got, err := a.ReadAll(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 900 {
			t.Fatalf("%s: %d records, want 900", topic, len(got))
		}
		last := map[string]int{} // by key: the last sequence number seen
		for _, m := range got {
			if v := placed[fmt.Sprintf("%s/%d/%d", topic, m.Partition, m.Offset)]; v != string(m.Value) {
				t.Fatalf("%s[%d]@%d holds %.12q, PublishPlaced said %.12q", topic, m.Partition, m.Offset, m.Value, v)
			}
			codec, rest, _ := strings.Cut(string(m.Value), "-")
			seq, err := strconv.Atoi(rest[:4])
			if err != nil {
				t.Fatal(err)
			}
			if h, _ := router.HeaderValue(m.Headers, "seq"); string(h) != strconv.Itoa(seq) {
				t.Fatalf("record %d has header seq=%q", seq, h)
			}
			if seq%2 != ti {
				t.Fatalf("record %d of topic %d in %s", seq, seq%2, topic)
			}
			k := codec + "/" + string(m.Key)
			if prev, ok := last[k]; ok && seq <= prev {
				t.Errorf("%s key %s: record %d after %d", topic, m.Key, seq, prev)
			}
			last[k] = seq
		}
	}
}
