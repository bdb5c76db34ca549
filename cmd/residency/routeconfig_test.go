package main

import (
	"fmt"
	"strings"
	"testing"
)

// routeYAML is the config of a `residency route` test: what differs from
// one test to the next. Its String is the YAML every such test shares:
// its http listener, clusters a (the ingest cluster) and b, the session
// and rebalance timeouts a quick rebalance needs, and the router's topics
// and group.
type routeYAML struct {
	// Listen is http.listen (freeAddr).
	Listen string
	// A and B are the brokers of clusters a and b; B empty: no cluster b.
	A, B []string
	// Clusters holds more clusters' lines, e.g. `down: {brokers: ["127.0.0.1:1"]}`.
	Clusters []string
	// Ingest, Group, Quarantine and DeadLetter are the router's ingest
	// topic, consumer group, quarantine and dead-letter topics.
	Ingest, Group, Quarantine, DeadLetter string
	// Router holds more router: lines, e.g. "give_up: 1s".
	Router []string
	// ShutdownTimeout is router.shutdown_timeout. Default 5s.
	ShutdownTimeout string
	// Rest is the YAML after the router section (rules:, redis:, audit:).
	Rest string
}

// String returns the config's YAML.
func (c routeYAML) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "http: {listen: %q}\nkafka:\n  clusters:\n    a: {brokers: [%s]}\n", c.Listen, strings.Join(c.A, ","))
	if len(c.B) > 0 {
		fmt.Fprintf(&b, "    b: {brokers: [%s]}\n", strings.Join(c.B, ","))
	}
	for _, l := range c.Clusters {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	shutdown := c.ShutdownTimeout
	if shutdown == "" {
		shutdown = "5s"
	}
	fmt.Fprintf(&b, `  ingest_cluster: a
  session_timeout: 6s
  rebalance_timeout: 5s
router:
  ingest_topics: [%s]
  consumer_group: %s
  quarantine_topic: %s
  dead_letter_topic: %s
  shutdown_timeout: %s
`, c.Ingest, c.Group, c.Quarantine, c.DeadLetter, shutdown)
	for _, l := range c.Router {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	b.WriteString(c.Rest)
	return b.String()
}

// write writes the config to a file of its own and returns its path.
func (c routeYAML) write(t *testing.T) string {
	t.Helper()
	return writeEventFile(t, "residency.yaml", []byte(c.String()))
}

// quickRetries are router lines that make a route test's retries and its
// give_up short.
var quickRetries = []string{"retry_min: 10ms", "retry_max: 200ms", "give_up: 1s"}

// twoRegionRules is the ruleset most route tests apply: US in region us
// (cluster a, topic us), the countries of EU in region eu (cluster
// euCluster, topic eu), and a store approved for us.
func twoRegionRules(us, euCluster, eu, countriesEU string) string {
	return fmt.Sprintf(`
jurisdictions:
  - {name: US, region: us, countries: [US]}
  - {name: EU, region: eu, countries: [%s]}
regions:
  - {name: us, cluster: a, topic: %s}
  - {name: eu, cluster: %s, topic: %s}
stores:
  - {name: us-postgres, regions: [us]}
`, countriesEU, us, euCluster, eu)
}

// writeRules writes ruleset YAML to a file of its own and returns its path.
func writeRules(t *testing.T, yaml string) string {
	t.Helper()
	return writeEventFile(t, "rules.yaml", []byte(yaml))
}
