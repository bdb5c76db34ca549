package testenv

import (
	"context"
	"errors"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// S3 is a bucket of its own for one test, on the dev stack's S3-compatible
// object store (moto's server).
type S3 struct {
	// Endpoint is the store's URL (http://HOST:PORT), addressed path-style.
	Endpoint string
	// Region is the region requests are signed for.
	Region string
	// AccessKeyID and SecretAccessKey sign requests.
	AccessKeyID, SecretAccessKey string
	// Bucket is a bucket made for this test; it is emptied and deleted when
	// the test ends.
	Bucket string
}

var awsEnvOnce sync.Once

// NewS3 makes a bucket unique to this test on the dev stack's object store.
// It has no embedded stand-in: without RESIDENCY_TEST_S3_ENDPOINT the test
// fails, or is skipped under -short.
//
// Code that opens buckets by URL (gocloud.dev's s3blob, the object store
// sink) takes its credentials from the AWS SDK's default chain, so NewS3 sets
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and clears AWS_SESSION_TOKEN
// and AWS_PROFILE) in this test process, once, to the dev stack's.
func NewS3(t testing.TB) *S3 {
	t.Helper()
	s := &S3{
		Endpoint:        required(t, EnvS3Endpoint, "an S3-compatible object store"),
		Region:          lookupOr(EnvS3Region, "us-east-1"),
		AccessKeyID:     required(t, EnvS3AccessKeyID, "the object store's access key id"),
		SecretAccessKey: required(t, EnvS3SecretAccessKey, "the object store's secret key"),
		// Bucket names: 3 to 63 lower-case letters, digits and hyphens.
		Bucket: strings.ReplaceAll(Name(t, "t"), "_", "-"),
	}
	awsEnvOnce.Do(func() {
		_ = os.Setenv("AWS_ACCESS_KEY_ID", s.AccessKeyID)
		_ = os.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretAccessKey)
		_ = os.Unsetenv("AWS_SESSION_TOKEN")
		_ = os.Unsetenv("AWS_PROFILE")
	})
	c := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	in := &s3.CreateBucketInput{Bucket: aws.String(s.Bucket)}
	if s.Region != "us-east-1" { // S3 wants the region named, except for its first one
		in.CreateBucketConfiguration = &types.CreateBucketConfiguration{
			LocationConstraint: types.BucketLocationConstraint(s.Region),
		}
	}
	if _, err := c.CreateBucket(ctx, in); err != nil {
		t.Fatalf("testenv: object store (%s=%s): create bucket %s: %v; %s", EnvS3Endpoint, s.Endpoint, s.Bucket, err, startHint)
	}
	t.Cleanup(func() { s.cleanup(c) })
	return s
}

// URL is the bucket's gocloud.dev/blob URL (s3blob): the endpoint, the
// region and path-style addressing are in its query.
func (s *S3) URL() string {
	q := url.Values{}
	q.Set("endpoint", s.Endpoint)
	q.Set("region", s.Region)
	q.Set("use_path_style", "true")
	return "s3://" + s.Bucket + "?" + q.Encode()
}

// Client returns an AWS SDK client of the store, signing with the dev
// stack's credentials.
func (s *S3) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKeyID, s.SecretAccessKey, ""),
	})
}

// cleanup deletes every object of the bucket, then the bucket.
func (s *S3) cleanup(c *s3.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(s.Bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			var nb *types.NoSuchBucket
			if errors.As(err, &nb) {
				return
			}
			break
		}
		for _, o := range page.Contents {
			_, _ = c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.Bucket), Key: o.Key})
		}
	}
	_, _ = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(s.Bucket)})
}
