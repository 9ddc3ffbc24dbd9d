// Command sink is a local provider for development, tests and benchmarks:
// it accepts webhooks on any path, remembers them per webhook-id, and can be
// told to fail or hang. Its control API lives under /_sink/.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"dispatch-engine/internal/sink"
)

func main() {
	var (
		addr  = flag.String("addr", envOr("SINK_ADDR", "127.0.0.1:9090"), "listen address (SINK_ADDR)")
		quiet = flag.Bool("quiet", false, "do not log each webhook")
		cfg   sink.Config
	)
	flag.Float64Var(&cfg.FailRate, "fail-rate", 0, "share of requests (0..1) answered with -fail-status")
	flag.IntVar(&cfg.FailFirst, "fail-first", 0, "answer the first N requests of each webhook-id with -fail-status")
	flag.IntVar(&cfg.FailStatus, "fail-status", http.StatusServiceUnavailable, "status code of failed answers")
	flag.IntVar(&cfg.HangFirst, "hang-first", 0, "never answer the first N requests of each webhook-id")
	flag.DurationVar(&cfg.Latency, "latency", 0, "delay every answer by this much")
	flag.Parse()

	logf := log.Printf
	if *quiet {
		logf = nil
	}
	srv := &http.Server{Addr: *addr, Handler: sink.New(cfg, logf), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
		<-sig
		_ = srv.Close()
	}()
	log.Printf("sink listening on http://%s (webhooks on any path, control on /_sink/)", *addr)
	if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(os.Stderr, "sink:", err)
		os.Exit(1)
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
