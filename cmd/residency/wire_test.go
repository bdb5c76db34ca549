package main

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/residency-router/residency/connectors/redis"
	"github.com/residency-router/residency/internal/config"
	"github.com/residency-router/residency/schemas"
)

// TestWireErrorsNameTheField calls the route's wiring directly with the
// configs of observation 6 of issue 12 (which made it panic on a nil
// pointer in its cleanup), as if they had changed after validation: each is
// an error naming the field, exit code 2, and wiring closes what it built.
func TestWireErrorsNameTheField(t *testing.T) {
	fx := brokenFixtures(t)
	base := func() *config.Config {
		c, err := config.Parse([]byte(validConfig(fx)))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Finish(config.Scope{Route: true}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name   string
		change func(c *config.Config)
		want   string
	}{
		{"catalogue dir missing", func(c *config.Config) { c.Schemas.CatalogueDir = "/nonexistent/schemas" }, "schemas.catalogue_dir: "},
		{"catalogue file bad", func(c *config.Config) { c.Schemas.CatalogueDir = fx["badavscdir"] }, "schemas.catalogue_dir: "},
		{"rules file missing", func(c *config.Config) { c.Rules.File = "/nonexistent/rules.yaml" }, "rules.file: "},
		{"kafka ca file missing", func(c *config.Config) {
			cl := c.Kafka.Clusters["ingest"]
			cl.TLS.Enabled, cl.TLS.CAFile = true, "/nonexistent/ca.pem"
			c.Kafka.Clusters["ingest"] = cl
		}, "kafka.clusters.ingest.tls.ca_file: "},
		{"confluent without registry", func(c *config.Config) { c.Schemas.DefaultFraming = schemas.FramingConfluent }, "schemas.registry.url: "},
		{"unknown default framing", func(c *config.Config) { c.Schemas.DefaultFraming = "avro" }, "schemas.default_framing: "},
		{"redis ca file missing", func(c *config.Config) {
			c.Rules.File = ""
			c.Redis.TLS = redis.TLSConfig{Enabled: true, CAFile: "/nonexistent/redis-ca.pem"}
		}, "redis.tls.ca_file: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.change(c)
			w, err := wire(c, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			if err == nil {
				_ = w.close()
				t.Fatal("wire succeeded")
			}
			if w != nil || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("wire = %v, %v; want a one-line usage error naming %q", w, err, tt.want)
			}
		})
	}
}
