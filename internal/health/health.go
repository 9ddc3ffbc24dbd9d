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

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Check probes one dependency; nil means it is usable.
type Check func(ctx context.Context) error

// Dependency is one service a process talks to.
type Dependency struct {
	Name  string
	Check Check
	// Required: the process cannot do its work while it is down, so it is
	// not ready. The others are reported (in the body, and to Observe) but
	// do not fail readiness: the API accepts with only PostgreSQL, and an
	// orchestrator that took every API pod out of service during a broker
	// restart would defeat the outbox.
	Required bool
}

// States of a dependency in the readiness body.
const (
	StateOK          = "ok"
	StateUnavailable = "unavailable"
)

// Observer hears every check's outcome: the process logs the error (which
// may name hosts and users, so it never goes into the answer) and sets a
// metric.
type Observer func(name string, err error)

// Reporter is the Observer of a process: it sets up (1 or 0) per
// dependency and logs a failed check with its error.
func Reporter(up *prometheus.GaugeVec, log *zap.Logger) Observer {
	return func(name string, err error) {
		if err != nil {
			up.WithLabelValues(name).Set(0)
			log.Warn("readiness check failed", zap.String("dependency", name), zap.Error(err))
			return
		}
		up.WithLabelValues(name).Set(1)
	}
}

// Live answers 200 while the process can serve HTTP at all.
func Live() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, "application/json", map[string]string{"status": "ok"})
	})
}

// Ready runs every check at once, each bounded by timeout, and answers 200
// with each dependency's state (status "ok", or "degraded" when one that is
// not required is down), or 503 as an RFC 9457 problem naming the required
// dependencies that failed. States are only "ok" or "unavailable": why a
// check failed goes to observe, not to whoever asks.
func Ready(deps []Dependency, timeout time.Duration, observe Observer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		var (
			mu       sync.Mutex
			wg       sync.WaitGroup
			states   = make(map[string]string, len(deps))
			failed   []string
			degraded bool
		)
		for _, dep := range deps {
			wg.Go(func() {
				err := dep.Check(ctx)
				if observe != nil {
					observe(dep.Name, err)
				}
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					states[dep.Name] = StateOK
					return
				}
				states[dep.Name] = StateUnavailable
				if dep.Required {
					failed = append(failed, dep.Name)
				} else {
					degraded = true
				}
			})
		}
		wg.Wait()
		if len(failed) == 0 {
			status := "ok"
			if degraded {
				status = "degraded"
			}
			writeJSON(w, http.StatusOK, "application/json", map[string]any{"status": status, "checks": states})
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
