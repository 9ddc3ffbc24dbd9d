package wfclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/client"

	"github.com/dispatch-engine/dispatch-engine/internal/config"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/internal/wfclient"
)

// pki is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written to files as an operator would hand them over.
type pki struct {
	caFile, certFile, keyFile string
	server                    tls.Certificate
	roots                     *x509.CertPool
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)

	issue := func(serial int64, usage x509.ExtKeyUsage, ips []net.IP) ([]byte, *ecdsa.PrivateKey) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "test"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		require.NoError(t, err)
		return der, key
	}
	write := func(name, kind string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600))
		return path
	}
	keyDER := func(k *ecdsa.PrivateKey) []byte {
		der, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)
		return der
	}

	serverDER, serverKey := issue(2, x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")})
	clientDER, clientKey := issue(3, x509.ExtKeyUsageClientAuth, nil)
	server, err := tls.X509KeyPair(
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: serverDER}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER(serverKey)}))
	require.NoError(t, err)
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return pki{
		caFile:   write("ca.pem", "CERTIFICATE", caDER),
		certFile: write("client.pem", "CERTIFICATE", clientDER),
		keyFile:  write("client-key.pem", "EC PRIVATE KEY", keyDER(clientKey)),
		server:   server,
		roots:    roots,
	}
}

// mtlsFrontend terminates mTLS in front of the Temporal server, as a
// cluster's TLS frontend (or Temporal Cloud) does, and returns its address.
func mtlsFrontend(t *testing.T, p pki, backend string) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.roots,
		NextProtos:   []string{"h2"},
		MinVersion:   tls.VersionTLS12,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = conn.Close() }()
				up, err := net.Dial("tcp", backend)
				if err != nil {
					return
				}
				defer func() { _ = up.Close() }()
				go func() { _, _ = io.Copy(up, conn) }()
				_, _ = io.Copy(conn, up)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestPlainConnectionByDefault(t *testing.T) {
	opts, creds, err := wfclient.Connection(config.Config{})
	require.NoError(t, err)
	require.Nil(t, opts.TLS)
	require.Nil(t, creds)
}

// TestRequestsAreCompressedOnlyWhenAsked: TEMPORAL_GRPC_COMPRESSION none
// (the default) turns off the SDK's gzip, over plain and TLS connections
// alike; gzip leaves the SDK's default, which is gzip.
func TestRequestsAreCompressedOnlyWhenAsked(t *testing.T) {
	defaults, err := config.Parse(map[string]string{})
	require.NoError(t, err)
	for _, cfg := range []config.Config{defaults, {TemporalGRPCCompression: "none", TemporalAPIKey: "a-cloud-api-key"}} {
		opts, _, err := wfclient.Connection(cfg)
		require.NoError(t, err)
		require.IsType(t, &client.GrpcCompressionNone{}, opts.GrpcCompression)
	}
	opts, _, err := wfclient.Connection(config.Config{TemporalGRPCCompression: "gzip"})
	require.NoError(t, err)
	require.Nil(t, opts.GrpcCompression, "the SDK's default: gzip")
}

func TestAPIKeyGoesOverTLS(t *testing.T) {
	opts, creds, err := wfclient.Connection(config.Config{TemporalAPIKey: "a-cloud-api-key"})
	require.NoError(t, err)
	require.NotNil(t, opts.TLS, "an API key is never sent in the clear")
	require.NotNil(t, creds)
}

func TestUnreadableCAIsAnErrorNamingTheVariable(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "ca.pem")
	require.NoError(t, os.WriteFile(bad, []byte("not a certificate"), 0o600))
	_, _, err := wfclient.Connection(config.Config{TemporalTLSCA: bad})
	require.ErrorContains(t, err, "TEMPORAL_TLS_CA")
}

func TestMutualTLSReachesTemporalThroughATLSFrontend(t *testing.T) {
	ctx := context.Background()
	temporal, err := testenv.StartTemporal(ctx)
	require.NoError(t, err)
	t.Cleanup(temporal.Stop)
	p := newPKI(t)
	addr := mtlsFrontend(t, p, temporal.Address)

	dial := func(cfg config.Config) error {
		opts, creds, err := wfclient.Connection(cfg)
		require.NoError(t, err)
		dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		c, err := client.DialContext(dctx, client.Options{HostPort: addr, Namespace: temporal.Namespace,
			ConnectionOptions: opts, Credentials: creds})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.CheckHealth(dctx, &client.CheckHealthRequest{})
		return err
	}

	require.NoError(t, dial(config.Config{TemporalTLSCA: p.caFile, TemporalTLSCert: p.certFile, TemporalTLSKey: p.keyFile}))
	require.Error(t, dial(config.Config{TemporalTLSCA: p.caFile}), "without the client certificate the frontend refuses")
	require.Error(t, dial(config.Config{TemporalTLS: true, TemporalTLSCert: p.certFile, TemporalTLSKey: p.keyFile}),
		"the system roots do not trust the test CA")
}
