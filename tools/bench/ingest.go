package main

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// IngestResult is the ingest section's figures.
type IngestResult struct {
	Single SingleIngest `json:"single"`
	Batch  *BatchIngest `json:"batch,omitempty"`
	// Created is every notification the section created; the worker
	// delivers them afterwards, in BacklogETASeconds at the end-to-end rate.
	Created           int     `json:"created"`
	BacklogETASeconds float64 `json:"backlogEtaSeconds"`
}

// SingleIngest is single POSTs at a fixed number of clients.
type SingleIngest struct {
	Clients  int     `json:"clients"`
	Seconds  float64 `json:"seconds"`
	Requests int     `json:"requests"`
	Accepted int     `json:"accepted"`
	// Errors counts failed requests by status ("0": no answer).
	Errors    map[string]int `json:"errors,omitempty"`
	ReqPerSec float64        `json:"reqPerSec"` // accepted / seconds
	LatencyMS Latency        `json:"latencyMs"` // of every answered request
	// APICPUMSPerRequest is the API process's CPU time over the section
	// divided by the requests sent (0 when the process was not found).
	APICPUMSPerRequest float64 `json:"apiCpuMsPerRequest"`
}

// BatchIngest is batch creates, one request at a time.
type BatchIngest struct {
	Batches             int     `json:"batches"`
	Size                int     `json:"size"`
	Clients             int     `json:"clients"`
	Failed              int     `json:"failed"`
	Notifications       int     `json:"notifications"`
	Seconds             float64 `json:"seconds"`
	NotificationsPerSec float64 `json:"notificationsPerSec"`
	LatencyMS           Latency `json:"latencyMs"` // per batch request
}

// runIngest measures how fast the API takes notifications: single POSTs at
// o.IngestClients clients for o.IngestDuration, then o.Batches batches of
// o.BatchSize when the batch endpoint exists.
func runIngest(ctx context.Context, o options, api *apiClient, procs *processes) (IngestResult, error) {
	var res IngestResult
	before := procs.sample()
	res.Single = ingestSingles(ctx, api, o.IngestClients, o.IngestDuration)
	after := procs.sample()
	if b, ok := before["api"]; ok && res.Single.Requests > 0 {
		res.Single.APICPUMSPerRequest = round3((after["api"] - b) * 1000 / float64(res.Single.Requests))
	}
	res.Created = res.Single.Accepted
	if res.Single.Accepted == 0 {
		return res, fmt.Errorf("no single POST was accepted (errors by status: %v)", res.Single.Errors)
	}
	if api.hasBatch && o.Batches > 0 && o.BatchSize > 0 {
		b := ingestBatches(ctx, api, o.Batches, o.BatchSize, o.BatchClients)
		res.Batch = &b
		res.Created += b.Notifications
	}
	return res, ctx.Err()
}

func ingestSingles(ctx context.Context, api *apiClient, clients int, d time.Duration) SingleIngest {
	run := uuid.NewString()[:8]
	var (
		seq      atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		errs     = map[string]int{}
		accepted int
		wg       sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			ok, bad := 0, map[string]int{}
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t := time.Now()
				_, status, err := api.create(ctx, notificationFor("ingest-"+run, int(seq.Add(1))))
				if status != 0 {
					mine = append(mine, time.Since(t))
				}
				if err != nil {
					bad[strconv.Itoa(status)]++
					continue
				}
				ok++
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, mine...)
			accepted += ok
			for k, v := range bad {
				errs[k] += v
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	res := SingleIngest{
		Clients: clients, Seconds: round3(elapsed), Requests: int(seq.Load()), Accepted: accepted,
		ReqPerSec: round3(float64(accepted) / elapsed), LatencyMS: latencyOf(lat),
	}
	if len(errs) > 0 {
		res.Errors = errs
	}
	return res
}

func ingestBatches(ctx context.Context, api *apiClient, batches, size, clients int) BatchIngest {
	run := uuid.NewString()[:8]
	res := BatchIngest{Batches: batches, Size: size, Clients: clients}
	// The items are built first: building them is not the API's time.
	bodies := make([][]createRequest, batches)
	for b := range bodies {
		bodies[b] = make([]createRequest, size)
		for i := range bodies[b] {
			bodies[b][i] = notificationFor("batch-"+run, b*size+i)
		}
	}
	var (
		mu   sync.Mutex
		lat  []time.Duration
		next atomic.Int64
		wg   sync.WaitGroup
	)
	start := time.Now()
	for range max(clients, 1) {
		wg.Go(func() {
			for {
				b := int(next.Add(1)) - 1
				if b >= batches {
					return
				}
				t := time.Now()
				got, _, err := api.createBatch(ctx, bodies[b])
				d := time.Since(t)
				mu.Lock()
				lat = append(lat, d)
				if err != nil {
					res.Failed++
				} else {
					res.Notifications += len(got)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	res.Seconds = round3(elapsed.Seconds())
	res.NotificationsPerSec = round3(float64(res.Notifications) / elapsed.Seconds())
	res.LatencyMS = latencyOf(lat)
	return res
}
