package objectstore

import (
	"context"
	"fmt"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/residency-router/residency/audit"
)

// AuditLogStore is the audit log's audit.Store on a gocloud.dev/blob bucket
// (file://, s3://, mem://): the tiles, entry bundles and checkpoints the
// integrator writes and `residency audit verify` reads, every path under
// Prefix. audittest.TestStore checks it.
//
// PutIfAbsent uses the bucket's conditional write (IfNotExist): atomic on
// S3; on file:// only within one process (fileblob checks, then renames).
type AuditLogStore struct {
	// Bucket is the bucket (required); the caller opens and closes it.
	Bucket *blob.Bucket
	// Prefix is prepended to every path (e.g. "audit/"); default "".
	Prefix string
}

var _ audit.Store = AuditLogStore{}

// Get implements audit.Store: an error wrapping audit.ErrNotFound when no
// object is at path.
func (s AuditLogStore) Get(ctx context.Context, path string) ([]byte, error) {
	b, err := s.Bucket.ReadAll(ctx, s.Prefix+path)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("%w: %s", audit.ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("objectstore: read %s: %w", s.Prefix+path, err)
	}
	return b, nil
}

// Put implements audit.Store.
func (s AuditLogStore) Put(ctx context.Context, path string, data []byte) error {
	if err := s.Bucket.WriteAll(ctx, s.Prefix+path, data, &blob.WriterOptions{ContentType: "application/octet-stream"}); err != nil {
		return fmt.Errorf("objectstore: write %s: %w", s.Prefix+path, err)
	}
	return nil
}

// PutIfAbsent implements audit.Store: an error wrapping audit.ErrExists
// when an object is already at path (the object is left as it was).
func (s AuditLogStore) PutIfAbsent(ctx context.Context, path string, data []byte) error {
	err := s.Bucket.WriteAll(ctx, s.Prefix+path, data, &blob.WriterOptions{ContentType: "application/octet-stream", IfNotExist: true})
	if gcerrors.Code(err) == gcerrors.FailedPrecondition {
		return fmt.Errorf("%w: %s", audit.ErrExists, path)
	}
	if err != nil {
		return fmt.Errorf("objectstore: write %s: %w", s.Prefix+path, err)
	}
	return nil
}
