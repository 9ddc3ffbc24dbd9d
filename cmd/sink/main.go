// Command sink is a local provider for development, tests and benchmarks:
// it accepts webhooks on any path, remembers them per webhook-id, and can be
// told to fail or hang. Its control API lives under /_sink/. Beside it an
// SMTP server (-smtp-addr) records the emails it is sent, listed at
// GET /_sink/mail, and a fake APNs (-apns-addr) over TLS and HTTP/2 records
// the pushes it is sent, listed at GET /_sink/apns; it writes its CA and the
// .p8 key it trusts to -apns-dir, for an apns provider's caFile and keyFile.
// A fake FCM HTTP v1 API with its OAuth2 token endpoint answers under /fcm/
// (messages listed at GET /_sink/fcm); it takes the grants of the service
// account whose key it keeps in -fcm-dir, an fcm provider's credentialsFile.
// With -sendgrid-api-key it also plays SendGrid: Mail Send at /v3/mail/send
// (what it took listed at GET /_sink/sendgrid), posting signed Event Webhook
// batches to -sendgrid-events-url.
package main

import (
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

func main() {
	var (
		addr  = flag.String("addr", envOr("SINK_ADDR", "127.0.0.1:9090"), "listen address (SINK_ADDR)")
		quiet = flag.Bool("quiet", false, "do not log each webhook")
		// Looked up rather than envOr: an empty SINK_SMTP_ADDR disables it too.
		smtpAddr = flag.String("smtp-addr", envOrUnset("SINK_SMTP_ADDR", "127.0.0.1:2525"), "SMTP listen address, empty to disable (SINK_SMTP_ADDR)")
		cfg      sink.Config
	)
	flag.Float64Var(&cfg.FailRate, "fail-rate", 0, "share of requests (0..1) answered with -fail-status")
	flag.IntVar(&cfg.FailFirst, "fail-first", 0, "answer the first N requests of each webhook-id with -fail-status")
	flag.IntVar(&cfg.FailStatus, "fail-status", http.StatusServiceUnavailable, "status code of failed answers")
	flag.IntVar(&cfg.HangFirst, "hang-first", 0, "never answer the first N requests of each webhook-id")
	flag.DurationVar(&cfg.Latency, "latency", 0, "delay every answer by this much")
	receiptsURL := flag.String("receipts-url", "", "send a signed receipt for every webhook taken on -receipts-paths to this base URL + the path's first segment (e.g. http://127.0.0.1:8080/v1/receipts/)")
	receiptsPaths := flag.String("receipts-paths", "", "comma-separated paths that send receipts (e.g. /push)")
	receiptsSecret := flag.String("receipts-secret", os.Getenv("SINK_RECEIPTS_SECRET"), "Standard Webhooks secret signing the receipts (SINK_RECEIPTS_SECRET)")
	apnsAddr := flag.String("apns-addr", envOrUnset("SINK_APNS_ADDR", "127.0.0.1:9443"), "fake APNs (TLS, HTTP/2) listen address, empty to disable (SINK_APNS_ADDR)")
	apnsDir := flag.String("apns-dir", envOr("SINK_APNS_DIR", ".data/apns"), "where the fake APNs writes ca.pem (its CA) and AuthKey.p8 (the key it trusts, kept across runs) (SINK_APNS_DIR)")
	apnsTeamID := flag.String("apns-team-id", "DEVTEAM001", "the only teamId (iss) the fake APNs accepts")
	apnsKeyID := flag.String("apns-key-id", "DEVKEY0001", "the only keyId (kid) the fake APNs accepts")
	fcmDir := flag.String("fcm-dir", envOrUnset("SINK_FCM_DIR", ".data/fcm"), "where the fake FCM keeps service-account.json, the key whose grants it takes (kept across runs); empty disables the fake FCM (SINK_FCM_DIR)")
	fcmProject := flag.String("fcm-project", "dispatch-dev", "the only Firebase project the fake FCM sends in")
	sendgridAPIKey := flag.String("sendgrid-api-key", os.Getenv("SINK_SENDGRID_API_KEY"), "the API key the fake SendGrid accepts at /v3/mail/send, empty to disable it (SINK_SENDGRID_API_KEY)")
	sendgridEventKey := flag.String("sendgrid-event-key", "", "PEM file of the key the fake SendGrid signs its events with, made when missing (default: a new key each run)")
	sendgridEventsURL := flag.String("sendgrid-events-url", "", "where the fake SendGrid posts its signed event batches (e.g. http://127.0.0.1:8080/v1/receipts/sendgrid)")
	printSendGridKey := flag.Bool("print-sendgrid-public-key", false, "print the public key of -sendgrid-event-key (a sendgrid provider's eventPublicKey) and exit")
	flag.Parse()

	if *printSendGridKey {
		fake, err := newSendGridFake("", *sendgridEventKey, "")
		if err != nil {
			fmt.Fprintln(os.Stderr, "sink sendgrid:", err)
			os.Exit(1)
		}
		fmt.Println(fake.PublicKey())
		return
	}

	logf := log.Printf
	if *quiet {
		logf = nil
	}
	webhooks := sink.New(cfg, logf)
	if *receiptsURL != "" {
		for _, path := range strings.Split(*receiptsPaths, ",") {
			if path = strings.TrimSpace(path); path != "" {
				pc := cfg
				pc.Receipts = &sink.Receipts{URL: *receiptsURL, Secret: *receiptsSecret}
				webhooks.SetPathConfig(path, pc)
			}
		}
	}
	var handler http.Handler = webhooks
	var mailSink *sink.Mail
	if *smtpAddr != "" {
		l, err := net.Listen("tcp", *smtpAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sink:", err)
			os.Exit(1)
		}
		mailSink = sink.NewMail(sink.MailConfig{})
		mux := http.NewServeMux()
		mux.Handle("/_sink/mail", mailSink.Handler())
		mux.Handle("/", handler)
		handler = mux
		go func() {
			if err := mailSink.Serve(l); err != nil {
				fmt.Fprintln(os.Stderr, "sink smtp:", err)
				os.Exit(1)
			}
		}()
		log.Printf("sink SMTP listening on %s", l.Addr())
	}
	var apns *sink.APNsServer
	if *apnsAddr != "" {
		fake, server, err := startAPNs(*apnsAddr, *apnsDir, *apnsTeamID, *apnsKeyID)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sink apns:", err)
			os.Exit(1)
		}
		apns = server
		mux := http.NewServeMux()
		mux.Handle("/_sink/apns", fake.Handler())
		mux.Handle("/", handler)
		handler = mux
		log.Printf("sink APNs listening on %s (HTTP/2; CA and key in %s)", server.URL, *apnsDir)
	}
	var sendgrid *sink.SendGridFake
	if *sendgridAPIKey != "" {
		fake, err := newSendGridFake(*sendgridAPIKey, *sendgridEventKey, *sendgridEventsURL)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sink sendgrid:", err)
			os.Exit(1)
		}
		sendgrid = fake
		mux := http.NewServeMux()
		mux.Handle("/v3/mail/send", fake)
		mux.Handle("/_sink/sendgrid", fake.Handler())
		mux.Handle("/", handler)
		handler = mux
		log.Printf("sink SendGrid at /v3/mail/send (events to %q)", *sendgridEventsURL)
	}
	if *fcmDir != "" {
		// A fake FCM that cannot keep its key (a read-only directory) is
		// left off rather than taking the webhooks and the mail down with
		// it: only an fcm provider pointed at it fails.
		if fake, err := startFCM(*fcmDir, *fcmProject, "http://"+*addr+"/fcm/token"); err != nil {
			log.Printf("sink fcm: %v; the fake FCM is off", err)
		} else {
			mux := http.NewServeMux()
			mux.Handle("/_sink/fcm", fake.Handler())
			mux.Handle("/fcm/", http.StripPrefix("/fcm", fake))
			mux.Handle("/", handler)
			handler = mux
			log.Printf("sink FCM at http://%s/fcm (token endpoint /fcm/token; service account key in %s)", *addr, *fcmDir)
		}
	}
	srv := &http.Server{Addr: *addr, Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		if mailSink != nil {
			_ = mailSink.Close()
		}
		if apns != nil {
			_ = apns.Close()
		}
		if sendgrid != nil {
			sendgrid.Close()
		}
		_ = srv.Close()
	}()
	log.Printf("sink listening on http://%s (webhooks on any path, control on /_sink/)", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
}

// startAPNs serves a fake APNs on addr trusting the .p8 key in dir
// (made there on the first run), and writes its CA to dir/ca.pem, both
// before the sink's HTTP port opens, so a worker started after the sink
// finds them. When addr is taken it serves on a free port instead: the
// files a providers file names are there all the same, and only an apns
// provider routed to addr fails, not the whole local stack.
func startAPNs(addr, dir, teamID, keyID string) (*sink.APNsFake, *sink.APNsServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	keyFile := filepath.Join(dir, "AuthKey.p8")
	p8, err := os.ReadFile(keyFile)
	if err != nil {
		if p8, _, err = sink.GenerateAPNsKey(); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
			return nil, nil, err
		}
	}
	public, err := sink.APNsPublicKey(p8)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	fake := sink.NewAPNsFake(sink.APNsFakeConfig{PublicKey: public, TeamID: teamID, KeyID: keyID})
	server, err := sink.StartAPNs(addr, fake)
	if err != nil {
		log.Printf("sink APNs: %v; serving on a free port instead", err)
		if server, err = sink.StartAPNs("127.0.0.1:0", fake); err != nil {
			return nil, nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), server.CA, 0o644); err != nil {
		_ = server.Close()
		return nil, nil, err
	}
	return fake, server, nil
}

// newSendGridFake is the fake SendGrid accepting apiKey, signing with the
// key at keyFile (made there when missing; a new one each run without a
// file) and posting its event batches to eventsURL.
func newSendGridFake(apiKey, keyFile, eventsURL string) (*sink.SendGridFake, error) {
	var key *ecdsa.PrivateKey
	if keyFile != "" {
		var err error
		if key, err = sink.LoadSendGridKey(keyFile); err != nil {
			return nil, err
		}
	}
	return sink.NewSendGridFake(sink.SendGridFakeConfig{APIKey: apiKey, EventsURL: eventsURL}, key)
}

// startFCM returns a fake FCM taking the grants of the service account
// whose key is dir/service-account.json, made there on the first run with
// tokenURL as its token_uri, before the sink's HTTP port opens, so a
// worker started after the sink finds it.
func startFCM(dir, project, tokenURL string) (*sink.FCMFake, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	keyFile := filepath.Join(dir, "service-account.json")
	key, err := os.ReadFile(keyFile)
	if err != nil {
		if key, _, err = sink.NewFCMServiceAccount(project, tokenURL); err != nil {
			return nil, err
		}
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			return nil, err
		}
	}
	keyProject, email, public, err := sink.FCMServiceAccountIdentity(key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	if keyProject != project {
		return nil, fmt.Errorf("%s is project %q's key, not %q's: remove it to make one", keyFile, keyProject, project)
	}
	return sink.NewFCMFake(sink.FCMFakeConfig{ProjectID: project, ClientEmail: email, PublicKey: public}), nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// envOrUnset is name's value when it is set, even to "", else def.
func envOrUnset(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}
