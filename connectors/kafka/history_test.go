package kafka_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/residency-router/residency/connectors/kafka"
	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/router/rules"
)

func archivedVersion(n int64, content string) rules.Archived {
	return rules.Archived{Info: rules.VersionInfo{Number: n, SHA256: rules.Hash([]byte(content)), Author: "test",
		AppliedAt: time.Now().UTC().Truncate(time.Millisecond), Previous: n - 1}, Content: []byte(content)}
}

// TestHistoryTopic (real Kafka): a missing topic, or one that is not
// compacted, is refused with how to create it; Create makes the compacted
// topic; the versions written are read back by number, a version written
// twice once, a number with two contents twice; a record that does not
// match its digest is refused.
func TestHistoryTopic(t *testing.T) {
	k := testenv.KafkaA(t)
	ctx := testenv.Context(t, 60*time.Second)
	cluster := kafka.Cluster{Name: k.Name, Brokers: k.Brokers}
	name := testenv.Name(t, "history")
	h, err := kafka.NewHistoryTopic(cluster, name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, err := h.ReadVersions(ctx); !errors.Is(err, kafka.ErrNoHistoryTopic) || !strings.Contains(err.Error(), "cleanup.policy=compact") {
		t.Fatalf("ReadVersions before Create = %v, want ErrNoHistoryTopic saying how to create it", err)
	}
	plain := k.Topic(t, "history-plain", 1)
	hp, err := kafka.NewHistoryTopic(cluster, plain)
	if err != nil {
		t.Fatal(err)
	}
	defer hp.Close()
	if err := hp.Check(ctx); !errors.Is(err, kafka.ErrHistoryTopicNotCompacted) || !strings.Contains(err.Error(), "cleanup.policy=delete") {
		t.Fatalf("Check of a topic with retention = %v, want ErrHistoryTopicNotCompacted", err)
	}
	k.DeleteAfter(t, name)
	if err := h.Create(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Create(ctx); err != nil {
		t.Fatalf("Create of an existing topic: %v", err)
	}
	if err := h.Check(ctx); err != nil {
		t.Fatal(err)
	}
	c := &kafkago.Client{Addr: kafkago.TCP(k.Brokers...)}
	cfg, err := c.DescribeConfigs(ctx, &kafkago.DescribeConfigsRequest{Resources: []kafkago.DescribeConfigRequestResource{
		{ResourceType: kafkago.ResourceTypeTopic, ResourceName: name, ConfigNames: []string{"cleanup.policy"}}}})
	if err != nil || len(cfg.Resources) != 1 || len(cfg.Resources[0].ConfigEntries) != 1 || cfg.Resources[0].ConfigEntries[0].ConfigValue != "compact" {
		t.Fatalf("cleanup.policy of the history topic: %+v, %v", cfg, err)
	}
	if vs, err := h.ReadVersions(ctx); err != nil || len(vs) != 0 {
		t.Fatalf("empty topic: %v, %v", vs, err)
	}
	v1, v2 := archivedVersion(1, "a: 1\n"), archivedVersion(2, "a: 2\n")
	v2again := archivedVersion(2, "a: two\n") // version 2 applied again after Redis lost its data
	if err := h.WriteVersions(ctx, v2, v1); err != nil {
		t.Fatal(err)
	}
	if err := h.WriteVersions(ctx, v1, v2again); err != nil {
		t.Fatal(err)
	}
	vs, err := h.ReadVersions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 3 || vs[0].Info.Number != 1 || vs[1].Info.Number != 2 || vs[2].Info.Number != 2 ||
		string(vs[0].Content) != "a: 1\n" || vs[0].Info.SHA256 != v1.Info.SHA256 || vs[0].Info.Author != "test" || !vs[0].Info.AppliedAt.Equal(v1.Info.AppliedAt) {
		t.Fatalf("read back %+v", vs)
	}
	if vs[1].Info.SHA256 == vs[2].Info.SHA256 {
		t.Fatal("the two contents of version 2 are one")
	}

	// Pins: the last record of a user counts, a removal drops it, and pin
	// records are not versions.
	if err := h.WritePins(ctx, rules.Pin{UserID: "u1", Jurisdiction: "EU"}, rules.Pin{UserID: "u2", Jurisdiction: "US"}); err != nil {
		t.Fatal(err)
	}
	if err := h.WritePins(ctx, rules.Pin{UserID: "u1", Jurisdiction: "UK"}, rules.Pin{UserID: "u2"}, rules.Pin{UserID: "u/3", Jurisdiction: "IN"}); err != nil {
		t.Fatal(err)
	}
	pins, err := h.ReadPins(ctx)
	if err != nil || len(pins) != 2 || pins[0] != (rules.Pin{UserID: "u/3", Jurisdiction: "IN"}) || pins[1] != (rules.Pin{UserID: "u1", Jurisdiction: "UK"}) {
		t.Fatalf("ReadPins = %+v, %v", pins, err)
	}
	if vs, err := h.ReadVersions(ctx); err != nil || len(vs) != 3 {
		t.Fatalf("versions among pins: %d, %v", len(vs), err)
	}

	bad := archivedVersion(3, "a: 3\n")
	bad.Info.SHA256 = v1.Info.SHA256
	if err := h.WriteVersions(ctx, bad); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ReadVersions(ctx); !errors.Is(err, rules.ErrCorrupt) {
		t.Fatalf("ReadVersions with a record that does not match its digest = %v, want ErrCorrupt", err)
	}
}
