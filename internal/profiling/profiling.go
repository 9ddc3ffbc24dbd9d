// Package profiling serves Go's profiler (net/http/pprof) on a loopback
// port when one is configured (API_PPROF_PORT, WORKER_PPROF_PORT), for
// profiling under load (docs/PERFORMANCE.md).
package profiling

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"go.uber.org/zap"
)

// Serve starts the profiler on 127.0.0.1:port and returns the function that
// stops it; port 0 starts nothing. The address is loopback whatever the
// process's other ports are: a profile shows internals (and a heap dump
// can hold data), so it is reached from the host only, or through a port
// forward.
func Serve(port int, log *zap.Logger) (stop func()) {
	if port == 0 {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{
		Addr:              net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() {
		log.Info("profiler listening", zap.String("addr", srv.Addr))
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("profiler stopped", zap.Error(err))
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}
