package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/residency-router/residency/stream"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// returns the server's TLS config and the certificate's PEM file.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kder, _ := x509.MarshalECPrivateKey(key)
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}))
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(file, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, file
}

// TestWireTLSAndSASL: the Producer and the Consumer connect with TLS
// (checking the broker's certificate) and each SASL mechanism, through
// their own connections and kafka-go's group membership.
func TestWireTLSAndSASL(t *testing.T) {
	serverTLS, caFile := selfSigned(t)
	for _, mech := range []string{"plain", "scram-sha-256", "scram-sha-512"} {
		t.Run(mech, func(t *testing.T) {
			method := map[string]string{"plain": "PLAIN", "scram-sha-256": "SCRAM-SHA-256", "scram-sha-512": "SCRAM-SHA-512"}[mech]
			c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "t"), kfake.EnableSASL(),
				kfake.Superuser(method, "router", "s3cret"), kfake.TLS(serverTLS))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			cluster := Cluster{Name: "tls", Brokers: c.ListenAddrs(), TLS: TLS{Enabled: true, CAFile: caFile},
				SASL: SASL{Mechanism: mech, Username: "router", Password: "s3cret"}}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			p, err := NewProducer(ProducerConfig{Cluster: cluster})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			want := []stream.Message{{Topic: "t", Key: []byte("a"), Value: []byte("1")}, {Topic: "t", Key: []byte("b"), Value: []byte("2")}}
			if err := p.Publish(ctx, want...); err != nil {
				t.Fatal(err)
			}
			cons, err := NewConsumer(ConsumerConfig{Cluster: cluster, GroupID: "g", Topics: []string{"t"}})
			if err != nil {
				t.Fatal(err)
			}
			defer cons.Close(context.Background())
			var got []stream.Message
			for len(got) < 2 {
				if got, err = cons.Poll(ctx, got, 10); err != nil {
					t.Fatal(err)
				}
			}
			if err := cons.Commit(ctx, OffsetsAfter(got...)...); err != nil {
				t.Fatal(err)
			}

			// A wrong password is refused, and said so.
			bad := cluster
			bad.SASL.Password = "wrong"
			d, err := bad.connDialer(nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.connect(ctx, c.ListenAddrs()[0]); err == nil {
				t.Fatal("connected with a wrong password")
			}
			// An untrusted certificate is refused.
			untrusted := cluster
			untrusted.TLS.CAFile = ""
			d, _ = untrusted.connDialer(nil)
			if _, err := d.connect(ctx, c.ListenAddrs()[0]); err == nil {
				t.Fatal("connected to a broker with an untrusted certificate")
			}
		})
	}
}
