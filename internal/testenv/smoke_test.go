package testenv_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"gocloud.dev/blob"
	_ "gocloud.dev/blob/s3blob" // s3:// buckets

	"github.com/residency-router/residency/internal/testenv"
	"github.com/residency-router/residency/schemas"
)

// TestSmokeKafka proves the harness: kafka-go produces (acks from all
// replicas) and consumes through a consumer group with committed offsets, on
// both clusters of the test environment and on kfake.
func TestSmokeKafka(t *testing.T) {
	t.Run("cluster_a", func(t *testing.T) {
		t.Parallel()
		k := testenv.KafkaA(t)
		t.Logf("cluster a: %s, Apache Kafka %s (real=%v)", strings.Join(k.Brokers, ","), k.Version, k.Real)
		roundTrip(t, k.Brokers, k.Topic(t, "smoke", 2))
	})
	t.Run("cluster_b", func(t *testing.T) {
		t.Parallel()
		k := testenv.KafkaB(t)
		t.Logf("cluster b: %s, Apache Kafka %s (real=%v)", strings.Join(k.Brokers, ","), k.Version, k.Real)
		roundTrip(t, k.Brokers, k.Topic(t, "smoke", 2))
	})
	t.Run("kfake", func(t *testing.T) {
		t.Parallel()
		c, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		topic := testenv.Name(t, "smoke")
		ctx := testenv.Context(t, 30*time.Second)
		if err := testenv.CreateTopics(ctx, c.ListenAddrs(), 2, topic); err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c.ListenAddrs(), topic)
	})
}

func roundTrip(t *testing.T, brokers []string, topic string) {
	t.Helper()
	ctx := testenv.Context(t, 90*time.Second)
	const n = 20
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
	}
	defer w.Close()
	var msgs []kafka.Message
	for i := range n {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "k%d", i%4), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}

	group := testenv.Name(t, "g")
	seen := consume(t, ctx, brokers, topic, group, n)
	if len(seen) != n {
		t.Fatalf("consumed %d distinct values, want %d", len(seen), n)
	}

	// The group's committed offsets cover everything: a new member of the
	// same group gets nothing more.
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: {0, 1}}})
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	var committed int64
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("offset fetch partition %d: %v", p.Partition, p.Error)
		}
		committed += p.CommittedOffset
	}
	if committed != n {
		t.Fatalf("committed offsets add up to %d, want %d", committed, n)
	}
}

func consume(t *testing.T, ctx context.Context, brokers []string, topic, group string, n int) map[string]bool {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:           brokers,
		GroupID:           group,
		Topic:             topic,
		StartOffset:       kafka.FirstOffset,
		MaxWait:           100 * time.Millisecond,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second,
		RebalanceTimeout:  5 * time.Second,
	})
	defer r.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d messages: %v", len(seen), err)
		}
		seen[string(m.Value)] = true
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	return seen
}

func TestSmokeRedis(t *testing.T) {
	t.Parallel()
	r := testenv.NewRedis(t)
	c := r.Client(t)
	ctx := testenv.Context(t, 10*time.Second)
	key := r.Prefix + "smoke"
	if err := c.Set(ctx, key, "hello", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != "hello" {
		t.Fatalf("get = %q, %v; want hello", got, err)
	}
	if !r.Real {
		t.Logf("miniredis at %s", r.Addr)
		return
	}
	info, err := c.Info(ctx, "server").Result()
	if err != nil {
		t.Fatalf("info: %v", err)
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(line, "redis_version:"); ok {
			t.Logf("redis %s at %s (real=%v)", strings.TrimSpace(v), r.Addr, r.Real)
		}
	}
}

func TestSmokePostgres(t *testing.T) {
	t.Parallel()
	pg := testenv.NewPostgres(t)
	ctx := testenv.Context(t, 20*time.Second)
	conn, err := pgx.Connect(ctx, pg.DSN)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE smoke (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO smoke VALUES (1, 'one'), (2, 'two')"); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var n int
	var schema, version string
	if err := conn.QueryRow(ctx, "SELECT count(*), current_schema(), current_setting('server_version') FROM smoke").Scan(&n, &schema, &version); err != nil {
		t.Fatalf("query: %v", err)
	}
	if n != 2 || schema != pg.Schema {
		t.Fatalf("count=%d schema=%q; want 2 rows in schema %q", n, schema, pg.Schema)
	}
	t.Logf("postgresql %s, schema %s", version, schema)
}

// TestSmokeRedisAuth proves the dev stack's Redis that requires a password
// refuses a client without one, and tells the ACL user from the default user.
func TestSmokeRedisAuth(t *testing.T) {
	t.Parallel()
	r := testenv.NewRedisAuth(t)
	ctx := testenv.Context(t, 10*time.Second)
	ping := func(user, pass string) error {
		c := redis.NewClient(&redis.Options{Addr: r.Addr, Username: user, Password: pass, MaxRetries: -1})
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	if err := ping("", ""); err == nil || !strings.Contains(err.Error(), "NOAUTH") {
		t.Fatalf("without a password: %v; want NOAUTH", err)
	}
	// The ACL user's password is not the default user's: a client that
	// drops the username is refused.
	if err := ping("", r.Password); err == nil || !strings.Contains(err.Error(), "WRONGPASS") {
		t.Fatalf("the ACL user's password without its username: %v; want WRONGPASS", err)
	}
	if r.RequirePass == "" {
		t.Fatalf("%s is not set", testenv.EnvRedisAuthRequirePass)
	}
	for _, who := range []struct{ user, pass, want string }{
		{r.Username, r.Password, r.Username},
		{"", r.RequirePass, "default"},
	} {
		c := redis.NewClient(&redis.Options{Addr: r.Addr, Username: who.user, Password: who.pass})
		got, err := c.Do(ctx, "ACL", "WHOAMI").Text()
		if err != nil || got != who.want {
			t.Fatalf("ACL WHOAMI as %q = %q, %v; want %q", who.user, got, err, who.want)
		}
		_ = c.Close()
	}
	c := r.Client(t)
	key := r.Prefix + "smoke"
	if err := c.Set(ctx, key, "hello", 0).Err(); err != nil {
		t.Fatalf("set: %v", err)
	}
	if got, err := c.Get(ctx, key).Result(); err != nil || got != "hello" {
		t.Fatalf("get = %q, %v; want hello", got, err)
	}
	t.Logf("redis requiring a password at %s: ACL user %s and the default user authenticate", r.Addr, r.Username)
}

// TestSmokeRedisTLS proves the dev stack's TLS-only Redis servers refuse
// plain TCP and certificates they cannot check, and answer go-redis with the
// stack's CA (and, for mutual TLS, its client certificate).
func TestSmokeRedisTLS(t *testing.T) {
	try := func(ctx context.Context, addr string, tc *tls.Config) error {
		c := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: tc, MaxRetries: -1, DialTimeout: 3 * time.Second})
		defer c.Close()
		return c.Ping(ctx).Err()
	}
	roundTrip := func(t *testing.T, r *testenv.Redis) {
		ctx := testenv.Context(t, 10*time.Second)
		c := r.Client(t)
		key := r.Prefix + "smoke"
		if err := c.Set(ctx, key, "hello", 0).Err(); err != nil {
			t.Fatalf("set over TLS: %v", err)
		}
		if got, err := c.Get(ctx, key).Result(); err != nil || got != "hello" {
			t.Fatalf("get over TLS = %q, %v; want hello", got, err)
		}
	}
	t.Run("tls", func(t *testing.T) {
		t.Parallel()
		r := testenv.NewRedisTLS(t)
		ctx := testenv.Context(t, 20*time.Second)
		if err := try(ctx, r.Addr, nil); err == nil {
			t.Fatal("plain TCP to the TLS-only Redis answered")
		}
		var unknown x509.UnknownAuthorityError
		if err := try(ctx, r.Addr, &tls.Config{MinVersion: tls.VersionTLS12}); !errors.As(err, &unknown) {
			t.Fatalf("TLS without the stack's CA: %v; want an unknown authority", err)
		}
		roundTrip(t, r)
		t.Logf("redis requiring TLS at %s (CA %s)", r.Addr, r.CAFile)
	})
	t.Run("mutual_tls", func(t *testing.T) {
		t.Parallel()
		r := testenv.NewRedisMTLS(t)
		ctx := testenv.Context(t, 20*time.Second)
		noCert := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: r.TLS.RootCAs}
		if err := try(ctx, r.Addr, noCert); err == nil {
			t.Fatal("TLS without a client certificate to the mutual-TLS Redis answered")
		}
		roundTrip(t, r)
		t.Logf("redis requiring mutual TLS at %s (client certificate %s)", r.Addr, r.CertFile)
	})
}

// TestSmokeS3 proves the dev stack's S3-compatible store through
// gocloud.dev/blob's s3blob driver, as the object store sink opens it: write,
// read, list, delete, and the object is where the S3 API says.
func TestSmokeS3(t *testing.T) {
	t.Parallel()
	s := testenv.NewS3(t)
	ctx := testenv.Context(t, 30*time.Second)
	b, err := blob.OpenBucket(ctx, s.URL())
	if err != nil {
		t.Fatalf("open %s: %v", s.URL(), err)
	}
	defer b.Close()
	const key = "eu/2026-01-02/03/smoke.avro"
	data := []byte("hello, object store")
	if err := b.WriteAll(ctx, key, data, nil); err != nil {
		t.Fatalf("write: %v", err)
	}
	got, err := b.ReadAll(ctx, key)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read = %q, %v; want %q", got, err, data)
	}
	var listed []string
	it := b.List(&blob.ListOptions{Prefix: "eu/"})
	for {
		o, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		listed = append(listed, o.Key)
	}
	if len(listed) != 1 || listed[0] != key {
		t.Fatalf("list eu/ = %q; want [%s]", listed, key)
	}
	head, err := s.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.Bucket, Key: aws.String(key)})
	if err != nil || aws.ToInt64(head.ContentLength) != int64(len(data)) {
		t.Fatalf("the S3 API sees the object as %v, %v; want %d bytes", head, err, len(data))
	}
	if err := b.Delete(ctx, key); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if ok, err := b.Exists(ctx, key); err != nil || ok {
		t.Fatalf("exists after delete = %v, %v", ok, err)
	}
	t.Logf("S3 at %s, bucket %s", s.Endpoint, s.Bucket)
}

// TestSmokeSchemaRegistry registers schemas through the Confluent API of the
// dev stack's registry and reads them back with the project's client.
func TestSmokeSchemaRegistry(t *testing.T) {
	t.Parallel()
	r := testenv.NewSchemaRegistry(t)
	ctx := testenv.Context(t, 30*time.Second)
	subject := r.Subject("events-value")
	v1 := `{"type":"record","name":"Event","namespace":"smoke","fields":[{"name":"user_id","type":"string"}]}`
	v2 := `{"type":"record","name":"Event","namespace":"smoke","fields":[{"name":"user_id","type":"string"},{"name":"country","type":"string","default":""}]}`
	id1 := r.Register(t, subject, v1)
	id2 := r.Register(t, subject, v2)
	if id1 == id2 {
		t.Fatalf("two different schemas got one id %d", id1)
	}
	reg, err := schemas.NewRegistry(schemas.RegistryConfig{URL: r.URL}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[uint32]string{id1: v1, id2: v2} {
		got, err := reg.SchemaByID(ctx, id)
		if err != nil {
			t.Fatalf("schema %d: %v", id, err)
		}
		if !sameJSON(t, got, want) {
			t.Fatalf("schema %d = %s; want %s", id, got, want)
		}
	}
	latest, err := reg.Latest(ctx, subject)
	if err != nil || latest.Version != 2 || latest.ID != id2 || latest.Subject != subject {
		t.Fatalf("latest = %+v, %v; want version 2, id %d", latest, err, id2)
	}
	if vs, err := reg.Versions(ctx, subject); err != nil || len(vs) != 2 {
		t.Fatalf("versions = %v, %v; want 2", vs, err)
	}
	if _, err := reg.Latest(ctx, r.Subject("missing")); !errors.Is(err, schemas.ErrSubjectNotFound) {
		t.Fatalf("latest of a subject never registered: %v; want ErrSubjectNotFound", err)
	}
	t.Logf("schema registry at %s: ids %d and %d", r.URL, id1, id2)
}

func sameJSON(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Fatalf("%q: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}
