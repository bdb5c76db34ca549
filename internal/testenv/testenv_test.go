package testenv

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// recorder stands in for a test to observe what testenv does to it.
type recorder struct {
	testing.TB
	fatal, skip string
	logs        []string
}

func (r *recorder) Helper()                      {}
func (r *recorder) Fatalf(f string, args ...any) { r.fatal = fmt.Sprintf(f, args...) }
func (r *recorder) Logf(f string, args ...any)   { r.logs = append(r.logs, fmt.Sprintf(f, args...)) }
func (r *recorder) Skipf(f string, args ...any)  { r.skip = fmt.Sprintf(f, args...) }
func (r *recorder) Name() string                 { return "recorder" }

func TestMissingServiceFailsUnderCI(t *testing.T) {
	t.Setenv("CI", "true")
	r := &recorder{}
	missing(r, EnvRedis, "Redis")
	if !strings.Contains(r.fatal, "required under CI=true") || !strings.Contains(r.fatal, EnvRedis) {
		t.Fatalf("under CI a missing service must fail naming its variable; got fatal %q", r.fatal)
	}
}

func TestMissingServiceFallsBackOutsideCI(t *testing.T) {
	t.Setenv("CI", "")
	r := &recorder{}
	missing(r, EnvRedis, "Redis")
	if r.fatal != "" {
		t.Fatalf("outside CI a missing service falls back; got fatal %q", r.fatal)
	}
	if len(r.logs) != 1 || !strings.Contains(r.logs[0], "embedded stand-in") {
		t.Fatalf("the fallback must be logged; logs %q", r.logs)
	}
}

func TestConfiguredButDeadServiceFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	t.Setenv(EnvRedis, addr)
	t.Setenv("CI", "")
	r := &recorder{}
	func() {
		defer func() { _ = recover() }() // the recorder's Fatalf returns; the code after it may panic
		NewRedis(r)
	}()
	if !strings.Contains(r.fatal, "does not answer") {
		t.Fatalf("a configured service that does not answer must fail, never fall back; got %q", r.fatal)
	}
}

func TestNameIsUniqueAndSafe(t *testing.T) {
	a, b := Name(t, "Topic.With/Odd chars"), Name(t, "Topic.With/Odd chars")
	if a == b {
		t.Fatalf("two names for one test are equal: %s", a)
	}
	for _, n := range []string{a, b} {
		if len(n) > 60 || strings.Trim(n, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			t.Fatalf("name %q is not lower-case letters, digits and underscores of at most 60", n)
		}
	}
}

func TestProxyCutAndRestore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); buf := make([]byte, 64); n, _ := c.Read(buf); _, _ = c.Write(buf[:n]) }()
		}
	}()
	p := NewProxy(t, ln.Addr().String())
	echo := func() error {
		c, err := net.DialTimeout("tcp", p.Addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil {
			return err
		}
		if string(buf) != "ping" {
			return fmt.Errorf("echo %q", buf)
		}
		return nil
	}
	if err := echo(); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Cut()
	if err := echo(); err == nil {
		t.Fatal("a cut proxy still passed traffic")
	}
	p.Restore()
	if err := echo(); err != nil {
		t.Fatalf("after restore: %v", err)
	}
}

func TestServiceWithoutStandInFailsOrSkips(t *testing.T) {
	for _, ci := range []string{"true", ""} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			t.Setenv(EnvRegistryURL, "")
			r := &recorder{}
			required(r, EnvRegistryURL, "a schema registry")
			if testing.Short() && ci == "" {
				if r.fatal != "" || !strings.Contains(r.skip, EnvRegistryURL) {
					t.Fatalf("under -short outside CI a missing service is skipped naming its variable; fatal %q skip %q", r.fatal, r.skip)
				}
				return
			}
			if r.skip != "" || !strings.Contains(r.fatal, EnvRegistryURL) || !strings.Contains(r.fatal, "deploy/dev/up") {
				t.Fatalf("a missing service without stand-in must fail naming its variable and how to start it; fatal %q skip %q", r.fatal, r.skip)
			}
		})
	}
}

func TestConfiguredButDeadServicesFail(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	t.Setenv("CI", "")
	t.Setenv(EnvRedisAuth, "redis://u:p@"+addr)
	t.Setenv(EnvRegistryURL, "http://"+addr+"/apis/ccompat/v7")
	t.Setenv(EnvS3Endpoint, "http://"+addr)
	t.Setenv(EnvS3AccessKeyID, "k")
	t.Setenv(EnvS3SecretAccessKey, "s")
	for name, open := range map[string]func(testing.TB){
		"redis auth": func(t testing.TB) { NewRedisAuth(t) },
		"registry":   func(t testing.TB) { NewSchemaRegistry(t) },
		"s3":         func(t testing.TB) { NewS3(t) },
	} {
		r := &recorder{}
		func() {
			defer func() { _ = recover() }() // the recorder's Fatalf returns; the code after it may panic
			open(r)
		}()
		if r.fatal == "" || r.skip != "" {
			t.Fatalf("%s: a configured service that does not answer must fail, never skip; fatal %q skip %q", name, r.fatal, r.skip)
		}
	}
}
