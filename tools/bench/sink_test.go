package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
)

// webhook posts a notification's webhook to the sink at base, as a provider
// call of the worker would.
func webhook(t *testing.T, base, id string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/sms-primary", strings.NewReader(`{"id":"`+id+`","channel":"sms"}`))
	require.NoError(t, err)
	req.Header.Set("webhook-id", id)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())
	require.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestSinkClientReadsTheProductsSink(t *testing.T) {
	srv := httptest.NewServer(sink.New(sink.Config{}, nil))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	snk := newSinkClient(srv.URL + "/") // a trailing slash is trimmed

	webhook(t, srv.URL, "n-1")
	webhook(t, srv.URL, "n-1")
	webhook(t, srv.URL, "n-2")

	rec, found, err := snk.record(ctx, "n-1")
	require.NoError(t, err)
	require.True(t, found)
	require.Equal(t, "n-1", rec.ID)
	require.Equal(t, 2, rec.Requests)
	require.Equal(t, 2, rec.Delivered)
	require.False(t, rec.FirstAt.IsZero())
	require.False(t, rec.LastAt.Before(rec.FirstAt))

	_, found, err = snk.record(ctx, "never-sent")
	require.NoError(t, err, "nothing received is an answer, not an error")
	require.False(t, found)

	st, err := snk.stats(ctx)
	require.NoError(t, err)
	require.Equal(t, 3, st.Requests)
	require.Equal(t, 2, st.UniqueIDs)
	require.Equal(t, 1, st.Duplicates)

	cfg, err := snk.config(ctx)
	require.NoError(t, err)
	require.Equal(t, 503.0, cfg["failStatus"], "the sink's default failure status")

	require.NoError(t, snk.reset(ctx))
	st, err = snk.stats(ctx)
	require.NoError(t, err)
	require.Zero(t, st.Requests)
	_, found, err = snk.record(ctx, "n-1")
	require.NoError(t, err)
	require.False(t, found)
}

func TestSinkClientReportsAnUnexpectedStatus(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down for maintenance", http.StatusBadGateway)
	}))
	t.Cleanup(srv.Close)

	_, err := newSinkClient(srv.URL).stats(context.Background())
	require.EqualError(t, err, "sink GET /_sink/stats: 502 Bad Gateway")
	_, _, err = newSinkClient(srv.URL).record(context.Background(), "x")
	require.EqualError(t, err, "sink GET /_sink/deliveries/x: 502 Bad Gateway")
}
