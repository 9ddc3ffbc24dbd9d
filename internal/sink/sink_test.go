package sink_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"dispatch-engine/internal/sink"
)

func post(t *testing.T, ctx context.Context, url, webhookID, body string) (int, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("webhook-id", webhookID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestSinkCountsRequestsWhoseBodyIDDiffersFromTheWebhookID(t *testing.T) {
	s := sink.New(sink.Config{}, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()

	code, err := post(t, context.Background(), srv.URL, "a", `{"id":"a"}`)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	_, err = post(t, context.Background(), srv.URL, "a", `{"id":"b"}`)
	require.NoError(t, err)

	st := s.Stats()
	require.Equal(t, 1, st.Mismatched)
	require.Equal(t, 1, st.Duplicates)
	require.Equal(t, 0, st.InFlight)
}

func TestSinkHangsEveryRequestWhileToldToAndReportsTheMostInFlight(t *testing.T) {
	s := sink.New(sink.Config{Hang: true}, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	arrivals := s.Arrivals(8)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, id := range []string{"a", "b", "c"} {
		wg.Go(func() {
			_, err := post(t, ctx, srv.URL, id, `{"id":"`+id+`"}`)
			require.Error(t, err, "a hung request ends only when the caller gives up")
		})
	}
	for range 3 {
		select {
		case <-arrivals:
		case <-time.After(10 * time.Second):
			t.Fatal("a request never arrived")
		}
	}
	require.Equal(t, 3, s.Stats().InFlight)
	cancel()
	wg.Wait()

	s.SetConfig(sink.Config{})
	code, err := post(t, context.Background(), srv.URL, "d", `{"id":"d"}`)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, code)
	require.Eventually(t, func() bool { return s.Stats().InFlight == 0 }, 5*time.Second, 10*time.Millisecond)
	st := s.Stats()
	require.Equal(t, 3, st.MaxInFlight)
	require.Equal(t, 3, st.Hung)
	require.Equal(t, 1, st.Delivered)
}
