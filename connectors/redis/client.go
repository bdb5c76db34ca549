package redis

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"gopkg.in/yaml.v3"
)

// Config says how to reach Redis: the `redis` section of the YAML config
// (docs/configuration.md). Every command that reaches Redis through the
// config (route, sink, replay, explain) builds its client from it with
// NewClient, so they all reach it the same way.
type Config struct {
	// Addr is Redis's host:port. Default "127.0.0.1:6379".
	Addr string `yaml:"addr"`
	// Prefix starts every key residency uses. Default "residency:"
	// (rules.DefaultPrefix).
	Prefix string `yaml:"prefix"`
	// Username for Redis ACLs. Default "": none.
	Username string `yaml:"username"`
	// Password for Redis. Default "": none. Prefer PasswordFile or
	// RESIDENCY_REDIS_PASSWORD to writing it in the file.
	Password string `yaml:"password" secret:"true"`
	// PasswordFile is a file holding Password (a trailing newline is
	// dropped), read once at start by the config loader
	// (internal/config), e.g. a mounted Kubernetes Secret. NewClient does
	// not read it. Default "": none.
	PasswordFile string `yaml:"password_file"`
	// DB is the Redis database number. Default 0.
	DB int `yaml:"db"`
	// TLS configures a TLS connection to Redis; `tls: true` is short for
	// `tls: {enabled: true}`. Default: disabled (plaintext).
	TLS TLSConfig `yaml:"tls"`
}

// TLSConfig configures a TLS connection to Redis. In YAML it is either a
// boolean (enabled or not, every other field at its default) or a mapping.
type TLSConfig struct {
	// Enabled turns TLS on. Default false.
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM file of CAs to trust. Default "": the system pool.
	CAFile string `yaml:"ca_file"`
	// CertFile is a PEM client certificate for mutual TLS. Default "":
	// none. Set with KeyFile.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key of CertFile. Default "": none.
	KeyFile string `yaml:"key_file"`
	// ServerName is the name checked in the server's certificate. Default
	// "": the host of the address.
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify disables certificate verification (testing only).
	// Default false.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// UnmarshalYAML reads `true`/`false` as Enabled, or the mapping of fields.
func (t *TLSConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		var on bool
		if err := n.Decode(&on); err != nil {
			return fmt.Errorf("%q is not true, false or a mapping (enabled, ca_file, cert_file, key_file, server_name, insecure_skip_verify)", n.Value)
		}
		*t = TLSConfig{Enabled: on}
		return nil
	}
	type plain TLSConfig // without this method
	return n.Decode((*plain)(t))
}

// Build returns the crypto/tls settings t describes, nil when TLS is off.
// It reads the CA and client certificate files; errors name the field under
// prefix ("redis.tls.ca_file"), and settings given while TLS is off are an
// error too (they would be silently ignored).
func (t TLSConfig) Build(prefix string) (*tls.Config, error) {
	if !t.Enabled {
		var set []string
		for _, f := range []struct {
			name string
			set  bool
		}{{"ca_file", t.CAFile != ""}, {"cert_file", t.CertFile != ""}, {"key_file", t.KeyFile != ""},
			{"server_name", t.ServerName != ""}, {"insecure_skip_verify", t.InsecureSkipVerify}} {
			if f.set {
				set = append(set, prefix+"."+f.name)
			}
		}
		if len(set) > 0 {
			verb := "is"
			if len(set) > 1 {
				verb = "are"
			}
			return nil, fmt.Errorf("%s.enabled: false, but %s %s set: set %s.enabled: true, or remove the TLS settings",
				prefix, strings.Join(set, ", "), verb, prefix)
		}
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in, documented as testing only
	}
	var errs []error
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s.ca_file: %w", prefix, err))
		default:
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("%s.ca_file: %s holds no PEM certificate", prefix, t.CAFile))
			}
			cfg.RootCAs = pool
		}
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		errs = append(errs, fmt.Errorf("%s: cert_file and key_file go together", prefix))
	case t.CertFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.cert_file: with %s.key_file: %w", prefix, prefix, err))
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// ClientOptions tune NewClient. The zero value is usable.
type ClientOptions struct {
	// Timeout is the read and write timeout of every command. Default 3s.
	Timeout time.Duration
	// MaxRetries is how often go-redis retries a failed command. Default 0:
	// go-redis's default (3).
	MaxRetries int
}

// NewClient returns a client for the Redis c describes (address, ACL user,
// password, database, TLS with its CA, client certificate and server name;
// dial timeout 3s), and silences go-redis's own logging: the errors it
// returns say it all. It does not connect yet. A TLS error names the field
// ("redis.tls.ca_file: ...").
func NewClient(c Config, o ClientOptions) (*goredis.Client, error) {
	tlsCfg, err := c.TLS.Build("redis.tls")
	if err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = 3 * time.Second
	}
	goredis.SetLogger(quietLogger{})
	return goredis.NewClient(&goredis.Options{Addr: c.Addr, Username: c.Username, Password: c.Password, DB: c.DB,
		DialTimeout: 3 * time.Second, ReadTimeout: o.Timeout, WriteTimeout: o.Timeout, MaxRetries: o.MaxRetries,
		TLSConfig: tlsCfg}), nil
}

// quietLogger drops go-redis's internal log lines (dial failures it also
// returns as errors).
type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}
