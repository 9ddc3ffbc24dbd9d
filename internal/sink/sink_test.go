package sink_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/sink"
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
	_ = resp.Body.Close()
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

func TestMaxInWindowCountsTheBusiestWindowPerChannel(t *testing.T) {
	s := sink.New(sink.Config{}, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	send := func(n int, channel string) {
		for i := range n {
			id := channel + "-" + strconv.Itoa(i) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			_, err := post(t, context.Background(), srv.URL, id, `{"id":"`+id+`","channel":"`+channel+`"}`)
			require.NoError(t, err)
		}
	}
	send(5, "sms")
	send(2, "push")

	require.Equal(t, 5, s.MaxInWindow(time.Minute, "sms"))
	require.Equal(t, 2, s.MaxInWindow(time.Minute, "push"))
	require.Equal(t, 7, s.MaxInWindow(time.Minute, ""))
	require.Equal(t, 1, s.MaxInWindow(time.Nanosecond, "sms"), "a window too short for two")
	s.Reset()
	require.Zero(t, s.MaxInWindow(time.Minute, ""))
}

func TestSinkAnswersWhatItIsTold(t *testing.T) {
	s := sink.New(sink.Config{Reply: []byte("\x00bin"), ReplyContentType: "application/octet-stream"}, nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/webhook", "application/json", strings.NewReader(`{"id":"a"}`))
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	require.Equal(t, "\x00bin", string(body))

	s.SetConfig(sink.Config{RedirectTo: "http://elsewhere.invalid/hook"})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err = client.Post(srv.URL+"/webhook", "application/json", strings.NewReader(`{"id":"b"}`))
	require.NoError(t, err)
	_ = resp.Body.Close()
	require.Equal(t, http.StatusTemporaryRedirect, resp.StatusCode)
	require.Equal(t, "http://elsewhere.invalid/hook", resp.Header.Get("Location"))
}
