package wfclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"go.temporal.io/sdk/client"

	"github.com/dispatch-engine/dispatch-engine/internal/config"
)

// Connection turns the Temporal settings into the SDK's connection options
// and credentials: plain (a dev server, a cluster inside the network), TLS
// (system roots or TEMPORAL_TLS_CA), mTLS (TEMPORAL_TLS_CERT and _KEY) or an
// API key (Temporal Cloud), which always goes over TLS; requests compressed
// with gzip or not (TEMPORAL_GRPC_COMPRESSION).
func Connection(cfg config.Config) (client.ConnectionOptions, client.Credentials, error) {
	var opts client.ConnectionOptions
	if cfg.TemporalGRPCCompression == "none" {
		opts.GrpcCompression = &client.GrpcCompressionNone{}
	}
	useTLS := cfg.TemporalTLS || cfg.TemporalTLSCert != "" || cfg.TemporalTLSCA != "" || cfg.TemporalAPIKey != ""
	if !useTLS {
		return opts, nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.TemporalTLSServerName}
	if cfg.TemporalTLSCert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.TemporalTLSCert, cfg.TemporalTLSKey)
		if err != nil {
			return opts, nil, fmt.Errorf("loading TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	if cfg.TemporalTLSCA != "" {
		pem, err := os.ReadFile(cfg.TemporalTLSCA)
		if err != nil {
			return opts, nil, fmt.Errorf("reading TEMPORAL_TLS_CA: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return opts, nil, fmt.Errorf("TEMPORAL_TLS_CA holds no PEM certificate")
		}
		tc.RootCAs = roots
	}
	opts.TLS = tc
	var creds client.Credentials
	if cfg.TemporalAPIKey != "" {
		creds = client.NewAPIKeyStaticCredentials(cfg.TemporalAPIKey)
	}
	return opts, creds, nil
}
