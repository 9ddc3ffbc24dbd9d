// Package health serves the liveness and readiness probes of both processes.
package health

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Check probes one dependency; nil means it is usable.
type Check func(ctx context.Context) error

// Live answers 200 while the process can serve HTTP at all.
func Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, "application/json", map[string]string{"status": "ok"})
	})
}

// Ready runs every check at once, each bounded by timeout, and answers 200
// with each dependency's state, or 503 as an RFC 9457 problem naming the
// dependencies that failed.
func Ready(checks map[string]Check, timeout time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		var (
			mu     sync.Mutex
			wg     sync.WaitGroup
			states = make(map[string]string, len(checks))
			failed []string
		)
		for name, check := range checks {
			wg.Go(func() {
				err := check(ctx)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					states[name] = "unavailable: " + err.Error()
					failed = append(failed, name)
					return
				}
				states[name] = "ok"
			})
		}
		wg.Wait()
		if len(failed) == 0 {
			writeJSON(w, http.StatusOK, "application/json", map[string]any{"status": "ok", "checks": states})
			return
		}
		slices.Sort(failed)
		writeJSON(w, http.StatusServiceUnavailable, "application/problem+json", map[string]any{
			"type":     "/problems/service-unavailable",
			"title":    "Not ready",
			"status":   http.StatusServiceUnavailable,
			"detail":   "unavailable: " + strings.Join(failed, ", "),
			"instance": r.URL.Path,
			"checks":   states,
		})
	})
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
