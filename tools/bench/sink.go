package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// sinkClient reads the local provider sink's control API (/_sink/).
type sinkClient struct {
	base string
	http *http.Client
}

func newSinkClient(base string) *sinkClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	return &sinkClient{base: strings.TrimRight(base, "/"), http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// sinkStats is the sink's GET /_sink/stats.
type sinkStats = sink.Stats

// sinkRecord is the part of GET /_sink/deliveries/{id} the bench uses (not
// sink.Record: the bench keeps thousands and needs no bodies or headers).
type sinkRecord struct {
	ID        string    `json:"id"`
	Requests  int       `json:"requests"`
	Delivered int       `json:"delivered"`
	FirstAt   time.Time `json:"firstAt"`
	LastAt    time.Time `json:"lastAt"`
}

func (s *sinkClient) call(ctx context.Context, method, path string, body io.Reader, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, body)
	if err != nil {
		return 0, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, fmt.Errorf("sink %s %s: %s", method, path, resp.Status)
	}
	if out != nil {
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode, nil
}

func (s *sinkClient) stats(ctx context.Context) (sinkStats, error) {
	var st sinkStats
	_, err := s.call(ctx, http.MethodGet, "/_sink/stats", nil, &st)
	return st, err
}

// config returns the sink's answering config as raw JSON.
func (s *sinkClient) config(ctx context.Context) (map[string]any, error) {
	var cfg map[string]any
	_, err := s.call(ctx, http.MethodGet, "/_sink/config", nil, &cfg)
	return cfg, err
}

// reset forgets every record and total.
func (s *sinkClient) reset(ctx context.Context) error {
	_, err := s.call(ctx, http.MethodDelete, "/_sink/deliveries", nil, nil)
	return err
}

// record returns what arrived for id; found is false when nothing did.
func (s *sinkClient) record(ctx context.Context, id string) (rec sinkRecord, found bool, err error) {
	status, err := s.call(ctx, http.MethodGet, "/_sink/deliveries/"+id, nil, &rec)
	if status == http.StatusNotFound {
		return sinkRecord{}, false, nil
	}
	return rec, err == nil, err
}
