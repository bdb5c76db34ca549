package kafka_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	segkafka "github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
)

func TestCompareConfig(t *testing.T) {
	for _, tc := range []struct {
		key, have, want string
		ok              bool
	}{
		{"retention.ms", "2592000000", "2592000000", true},
		{"retention.ms", "-1", "2592000000", true},         // for ever is long enough
		{"retention.ms", "604800000", "2592000000", false}, // 7d < 30d
		{"retention.ms", "2592000000", "-1", false},        // 30d is not for ever
		{"retention.ms", "5184000000", "2592000000", true}, // longer is fine
		{"min.insync.replicas", "3", "2", true},            // stricter is fine
		{"min.insync.replicas", "1", "2", false},           //
		{"max.message.bytes", "1048588", "2000000", false}, //
		{"cleanup.policy", "compact,delete", "delete,compact", true},
		{"cleanup.policy", "delete", "compact", false},
		{"message.timestamp.type", "LogAppendTime", "CreateTime", false},
		{"message.timestamp.type", "CreateTime", "CreateTime", true},
		{"retention.ms", "", "1", false},
	} {
		if got := kafka.CompareConfig(tc.key, tc.have, tc.want); got != tc.ok {
			t.Errorf("CompareConfig(%s, have %q, want %q) = %v", tc.key, tc.have, tc.want, got)
		}
	}
}

func TestDiffTopic(t *testing.T) {
	want := kafka.TopicSpec{Name: "t", Partitions: 6, ReplicationFactor: 3,
		Configs: map[string]string{"cleanup.policy": "delete", "min.insync.replicas": "2", "retention.ms": "2592000000"}}
	if d := kafka.DiffTopic(want, kafka.TopicState{Name: "t"}); len(d) != 1 || d[0].Kind != kafka.ChangeCreate {
		t.Fatalf("missing topic: %v", d)
	}
	have := kafka.TopicState{Name: "t", Exists: true, Partitions: 3, ReplicationFactor: 1,
		Configs: map[string]string{"cleanup.policy": "delete", "min.insync.replicas": "1", "retention.ms": "-1", "segment.ms": "1"}}
	d := kafka.DiffTopic(want, have)
	var got []string
	for _, c := range d {
		got = append(got, c.String())
	}
	wantChanges := []string{"3 partitions, want at least 6", "replication factor 1, want at least 3", "min.insync.replicas=1, want 2"}
	if !slices.Equal(got, wantChanges) {
		t.Fatalf("diff %q, want %q", got, wantChanges)
	}
	if d[1].Fixable() || !d[0].Fixable() || !d[2].Fixable() {
		t.Errorf("fixable: %v", d)
	}
	// More partitions than wanted is fine: they are never lowered.
	have.Partitions, have.ReplicationFactor, have.Configs["min.insync.replicas"] = 12, 3, "2"
	if d := kafka.DiffTopic(want, have); d != nil {
		t.Errorf("a topic as wanted: %v", d)
	}
}

// TestAdminTopics: on each real cluster, a topic is created with its
// partitions, replication factor and configs, described as created, altered
// (configs set, partitions added; never fewer), and creating it again is an
// error that leaves it alone.
func TestAdminTopics(t *testing.T) {
	for _, k := range []*testenv.Kafka{testenv.KafkaA(t), testenv.KafkaB(t)} {
		t.Run("cluster_"+k.Name, func(t *testing.T) {
			ctx := testenv.Context(t, 60*time.Second)
			a, err := kafka.NewAdmin(kafka.Cluster{Name: k.Name, Brokers: k.Brokers})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			brokers, err := a.Brokers(ctx)
			if err != nil || brokers < 1 {
				t.Fatalf("brokers: %d, %v", brokers, err)
			}
			name := testenv.Name(t, "adm")
			k.DeleteAfter(t, name)
			spec := kafka.TopicSpec{Name: name, Partitions: 2, ReplicationFactor: 1, Configs: map[string]string{
				"cleanup.policy": "delete", "retention.ms": "2592000000", "message.timestamp.type": "CreateTime", "min.insync.replicas": "1"}}
			st, err := a.DescribeTopics(ctx, name)
			if err != nil || st[name].Exists {
				t.Fatalf("before: %+v, %v", st, err)
			}
			if err := a.CreateTopic(ctx, spec); err != nil {
				t.Fatal(err)
			}
			st, err = a.DescribeTopics(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if d := kafka.DiffTopic(spec, st[name]); d != nil || st[name].Partitions != 2 || st[name].ReplicationFactor != 1 {
				t.Fatalf("created %+v, diff %v", st[name], d)
			}
			if err := a.CreateTopic(ctx, spec); !errors.Is(err, segkafka.TopicAlreadyExists) {
				t.Fatalf("creating it again: %v", err)
			}
			want := spec
			want.Partitions = 4
			want.Configs = map[string]string{"cleanup.policy": "delete", "retention.ms": "5184000000", "message.timestamp.type": "CreateTime", "min.insync.replicas": "1"}
			if err := a.AlterTopic(ctx, name, map[string]string{"retention.ms": "5184000000"}, 4); err != nil {
				t.Fatal(err)
			}
			st, err = a.DescribeTopics(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if d := kafka.DiffTopic(want, st[name]); d != nil || st[name].Partitions != 4 {
				t.Fatalf("altered %+v, diff %v", st[name], d)
			}
			// Fewer partitions than it has: nothing happens.
			if err := a.AlterTopic(ctx, name, nil, 1); err != nil {
				t.Fatal(err)
			}
			if st, err := a.DescribeTopics(ctx, name); err != nil || st[name].Partitions != 4 || st[name].Configs["cleanup.policy"] != "delete" {
				t.Fatalf("after asking for fewer partitions: %+v, %v", st[name], err)
			}
		})
	}
}

// TestBrokerHasConfig: Apache Kafka (3.6 and later) knows the broker
// config behind message.timestamp.after.max.ms, so `topics` sets the
// timestamp limits of the topics the router writes; the embedded stand-in
// does not (creating a topic with the config would fail there), and no
// broker knows a made-up name.
func TestBrokerHasConfig(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 30*time.Second)
	a, err := kafka.NewAdmin(kafka.Cluster{Name: k.Name, Brokers: k.Brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	has, err := a.BrokerHasConfig(ctx, "log.message.timestamp.after.max.ms")
	if err != nil {
		t.Fatal(err)
	}
	if has != k.Real {
		t.Errorf("log.message.timestamp.after.max.ms known: %v on %s", has, k.Version)
	}
	if has, err := a.BrokerHasConfig(ctx, "log.no.such.config"); err != nil || has {
		t.Errorf("a made-up config: %v, %v", has, err)
	}
}
