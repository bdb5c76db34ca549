// Package kafka adapts github.com/segmentio/kafka-go to the router's ports:
// Reader is a stream.Subscriber (a consumer-group member that fetches and
// commits explicitly, never ReadMessage's commit-before-process) and Writer a
// stream.Publisher (acknowledged by all in-sync replicas, a small batch
// timeout, hash partitioning on the key, no topic auto-creation).
//
// Consumer (a batch consumer-group member: one fetch per broker, records
// decoded in bulk without an allocation per record) and Producer (an
// idempotent producer with several requests in flight per broker) are their
// lower-level counterparts, on kafka-go's group membership and protocol
// package over connections of their own.
//
// kafka-go types stay in this package; the router sees only stream.Message.
package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// ErrConfig marks an invalid cluster, reader or writer configuration. The
// error text names the offending field.
var ErrConfig = errors.New("kafka: bad config")

// Cluster is how to reach one Kafka cluster.
type Cluster struct {
	// Name is the cluster's name (rulesets refer to it in regions[].cluster).
	// Required.
	Name string `yaml:"name"`
	// Brokers are bootstrap host:port addresses. Required.
	Brokers []string `yaml:"brokers"`
	// ClientID is sent to the brokers. Default "residency".
	ClientID string `yaml:"client_id"`
	// DialTimeout bounds connecting to a broker. Default 10s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// TLS configures encryption. Default: disabled (plaintext).
	TLS TLS `yaml:"tls"`
	// SASL configures authentication. Default: none.
	SASL SASL `yaml:"sasl"`
}

// TLS configures a TLS connection to the brokers.
type TLS struct {
	// Enabled turns TLS on. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of CAs to trust. Default "": the system pool.
	CAFile string `yaml:"ca_file"`
	// CertFile is a PEM client certificate for mutual TLS. Default "": none.
	// Set with KeyFile.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile. Default "": none.
	KeyFile string `yaml:"key_file"`
	// ServerName overrides the name checked in the broker certificates.
	// Default "": the broker host.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate verification (testing only).
	// Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// SASL configures SASL authentication.
type SASL struct {
	// Mechanism is "plain", "scram-sha-256" or "scram-sha-512". Default "":
	// no SASL.
	Mechanism string `yaml:"mechanism"`
	// Username is the SASL user. Required with a mechanism.
	Username string `yaml:"username"`
	// Password is the SASL password. Required with a mechanism (or
	// PasswordFile).
	Password string `yaml:"password" secret:"true"`
	// PasswordFile is a file holding Password (a trailing newline is
	// dropped), read once at start by the config loader
	// (internal/config); this package does not read it. Default "": none.
	PasswordFile string `yaml:"password_file"`
}

// Validate checks the cluster config; errors name the field under prefix
// (e.g. "kafka.clusters.eu").
func (c *Cluster) Validate(prefix string) error {
	var errs []error
	bad := func(field, msg string) {
		errs = append(errs, fmt.Errorf("%w: %s.%s: %s", ErrConfig, prefix, field, msg))
	}
	if len(c.Brokers) == 0 {
		bad("brokers", "required")
	}
	for i, b := range c.Brokers {
		if !strings.Contains(b, ":") {
			bad(fmt.Sprintf("brokers[%d]", i), fmt.Sprintf("%q is not host:port", b))
		}
	}
	if c.DialTimeout < 0 {
		bad("dial_timeout", "must not be negative")
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls", "cert_file and key_file go together")
	}
	if !c.TLS.Enabled {
		var set []string
		for _, f := range []struct {
			name string
			set  bool
		}{{"ca_file", c.TLS.CAFile != ""}, {"cert_file", c.TLS.CertFile != ""}, {"key_file", c.TLS.KeyFile != ""},
			{"server_name", c.TLS.ServerName != ""}, {"insecure_skip_verify", c.TLS.InsecureSkipVerify}} {
			if f.set {
				set = append(set, prefix+".tls."+f.name)
			}
		}
		if len(set) > 0 {
			verb := "is"
			if len(set) > 1 {
				verb = "are"
			}
			bad("tls.enabled", fmt.Sprintf("false, but %s %s set: set tls.enabled: true, or remove the TLS settings", strings.Join(set, ", "), verb))
		}
	} else {
		// The files are read at start, so a bad one is a config error now
		// rather than a failure at the first connection.
		if c.TLS.CAFile != "" {
			if pem, err := os.ReadFile(c.TLS.CAFile); err != nil {
				bad("tls.ca_file", err.Error())
			} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
				bad("tls.ca_file", fmt.Sprintf("%s holds no PEM certificate", c.TLS.CAFile))
			}
		}
		if c.TLS.CertFile != "" && c.TLS.KeyFile != "" {
			if _, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile); err != nil {
				bad("tls.cert_file", "with tls.key_file: "+err.Error())
			}
		}
	}
	switch strings.ToLower(c.SASL.Mechanism) {
	case "":
	case "plain", "scram-sha-256", "scram-sha-512":
		if c.SASL.Username == "" {
			bad("sasl.username", "required with a mechanism")
		}
		if c.SASL.Password == "" && c.SASL.PasswordFile == "" {
			bad("sasl.password", "required with a mechanism (or sasl.password_file)")
		}
	default:
		bad("sasl.mechanism", fmt.Sprintf("%q is not plain, scram-sha-256 or scram-sha-512", c.SASL.Mechanism))
	}
	return errors.Join(errs...)
}

// Defaults of Cluster.
const (
	// DefaultClientID is the default of Cluster.ClientID.
	DefaultClientID = "residency"
	// DefaultDialTimeout is the default of Cluster.DialTimeout.
	DefaultDialTimeout = 10 * time.Second
)

func (c *Cluster) clientID() string {
	if c.ClientID == "" {
		return DefaultClientID
	}
	return c.ClientID
}

func (c *Cluster) dialTimeout() time.Duration {
	if c.DialTimeout == 0 {
		return DefaultDialTimeout
	}
	return c.DialTimeout
}

// tlsConfig returns nil when TLS is disabled.
func (c *Cluster) tlsConfig() (*tls.Config, error) {
	if !c.TLS.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         c.TLS.ServerName,
		InsecureSkipVerify: c.TLS.InsecureSkipVerify, //nolint:gosec // opt-in, documented as testing only
	}
	if c.TLS.CAFile != "" {
		pem, err := os.ReadFile(c.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: cluster %s: tls.ca_file: %w", c.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: cluster %s: tls.ca_file %s holds no PEM certificate", ErrConfig, c.Name, c.TLS.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c.TLS.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("kafka: cluster %s: tls.cert_file/key_file: %w", c.Name, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// mechanism returns nil when SASL is not configured.
func (c *Cluster) mechanism() (sasl.Mechanism, error) {
	switch strings.ToLower(c.SASL.Mechanism) {
	case "":
		return nil, nil
	case "plain":
		return plain.Mechanism{Username: c.SASL.Username, Password: c.SASL.Password}, nil
	case "scram-sha-256":
		return scram.Mechanism(scram.SHA256, c.SASL.Username, c.SASL.Password)
	case "scram-sha-512":
		return scram.Mechanism(scram.SHA512, c.SASL.Username, c.SASL.Password)
	default:
		return nil, fmt.Errorf("%w: cluster %s: sasl.mechanism %q", ErrConfig, c.Name, c.SASL.Mechanism)
	}
}

// dialer is used by readers.
func (c *Cluster) dialer() (*kafka.Dialer, error) {
	t, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	m, err := c.mechanism()
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{ClientID: c.clientID(), Timeout: c.dialTimeout(), DualStack: true, TLS: t, SASLMechanism: m}, nil
}

// transport is used by writers.
func (c *Cluster) transport() (*kafka.Transport, error) {
	t, err := c.tlsConfig()
	if err != nil {
		return nil, err
	}
	m, err := c.mechanism()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{ClientID: c.clientID(), DialTimeout: c.dialTimeout(), TLS: t, SASL: m}, nil
}
