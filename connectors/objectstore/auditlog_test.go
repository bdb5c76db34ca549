package objectstore_test

import (
	"path/filepath"
	"testing"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/memblob" // mem:// buckets

	"github.com/residency-router/residency/audit"
	"github.com/residency-router/residency/audit/audittest"
	"github.com/residency-router/residency/connectors/objectstore"
	"github.com/residency-router/residency/internal/testenv"
)

// auditLogStores runs the audit.Store conformance suite on an
// AuditLogStore over the buckets newURL makes, one per check, with and
// without a prefix.
func auditLogStores(t *testing.T, newURL func(t *testing.T) string) {
	for _, prefix := range []string{"", "audit/"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			audittest.TestStore(t, func(t *testing.T) audit.Store {
				b, err := blob.OpenBucket(testenv.Context(t, 30*time.Second), newURL(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = b.Close() })
				return objectstore.AuditLogStore{Bucket: b, Prefix: prefix}
			})
		})
	}
}

// TestAuditLogStoreConforms runs the suite on file:// and mem:// buckets.
func TestAuditLogStoreConforms(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		auditLogStores(t, func(t *testing.T) string {
			return "file://" + filepath.ToSlash(t.TempDir()) + "?no_tmp_dir=true"
		})
	})
	t.Run("mem", func(t *testing.T) {
		auditLogStores(t, func(*testing.T) string { return "mem://" })
	})
}

// TestS3AuditLogStoreConforms runs the suite on the dev stack's
// S3-compatible server (s3blob), a bucket per check: PutIfAbsent is the
// store's conditional write there.
func TestS3AuditLogStoreConforms(t *testing.T) {
	auditLogStores(t, func(t *testing.T) string { return testenv.NewS3(t).URL() })
}

// TestAuditLogStorePrefix checks that the prefix is where the objects go.
func TestAuditLogStorePrefix(t *testing.T) {
	dir := t.TempDir()
	ctx := testenv.Context(t, 30*time.Second)
	b, err := blob.OpenBucket(ctx, "file://"+filepath.ToSlash(dir)+"?no_tmp_dir=true")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s := objectstore.AuditLogStore{Bucket: b, Prefix: "audit/"}
	if err := s.Put(ctx, "checkpoint", []byte("c")); err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Exists(ctx, "audit/checkpoint"); err != nil || !ok {
		t.Errorf("audit/checkpoint exists = %v, %v; want the object under the prefix", ok, err)
	}
	if ok, _ := b.Exists(ctx, "checkpoint"); ok {
		t.Error("checkpoint was written outside the prefix")
	}
}
