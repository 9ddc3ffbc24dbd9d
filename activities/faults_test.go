package activities_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/testsuite"

	"github.com/dispatch-engine/dispatch-engine/activities"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/ratelimit"
	"github.com/dispatch-engine/dispatch-engine/internal/store"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// executeTimed runs Deliver and says how long it took.
func executeTimed(acts *activities.Activities, in workflows.DeliverInput) (workflows.DeliverResult, time.Duration, error) {
	start := time.Now()
	val, err := execute(acts, in)
	took := time.Since(start)
	var res workflows.DeliverResult
	if err == nil {
		err = val.Get(&res)
	}
	return res, took, err
}

// proxiedPool is a pool on the test's database through a proxy the test can
// partition.
func proxiedPool(t *testing.T, pool *pgxpool.Pool) (*pgxpool.Pool, *testenv.Proxy) {
	t.Helper()
	cfg := pool.Config().ConnConfig
	proxy := testenv.NewProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	dsn := (&url.URL{Scheme: "postgres", User: url.User(cfg.User), Host: proxy.Addr(), Path: cfg.Database, RawQuery: "sslmode=disable"}).String()
	p, err := store.Connect(context.Background(), dsn, 4)
	require.NoError(t, err)
	t.Cleanup(p.Close)
	// Healed before the pool closes, so closing does not wait on
	// connections stuck in the partition.
	t.Cleanup(proxy.Heal)
	return p, proxy
}

func TestDeliverStoresAReplyWithNULBytesAndSendsOnce(t *testing.T) {
	reply := []byte("\x00\x01binary\xff\xfe reply\x00")
	p := newProvider(t, func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(reply)
	})
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome)
	require.Nil(t, res.Unrecorded, "the attempt was recorded by the activity")
	require.EqualValues(t, 1, p.calls.Load(), "sent once")
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusDelivered, got.Status)
	require.Equal(t, 1, got.Attempts)
	rows := attempts(t, acts.Pool, n.ID)
	require.Len(t, rows, 1)
	require.Equal(t, provider.Excerpt(reply), *rows[0].ResponseExcerpt)
	require.Equal(t, "\uFFFD\x01binary\uFFFD reply\uFFFD", *rows[0].ResponseExcerpt)
}

func TestDeliverWhilePostgresHangsSendsNothingAndEndsInTime(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)
	var proxy *testenv.Proxy
	acts.Pool, proxy = proxiedPool(t, acts.Pool)
	proxy.Partition()

	_, took, err := executeTimed(acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	requireNotAttempted(t, err)
	// pgx alone would wait for as long as the database does.
	require.Less(t, took, 5*time.Second, "each database call is bounded")
	require.Zero(t, p.calls.Load(), "nothing reached the provider")
}

func TestDeliverWhileRedisHangsSendsNothingAndEndsInTime(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	rdbURL := testenv.Shared(t).RedisURL
	u, err := url.Parse(rdbURL)
	require.NoError(t, err)
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	rdb, err := ratelimit.NewClient(u.String())
	require.NoError(t, err)
	t.Cleanup(func() { _ = rdb.Close() })
	acts.Limiter = ratelimit.New(rdb, testenv.Name("hang:"), map[string]int{string(notification.SMS): 1000})
	acts.SlotWait = 4 * time.Second
	proxy.Partition()
	n := createNotification(t, acts.Pool)

	_, took, err := executeTimed(acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	requireNotAttempted(t, err)
	require.Less(t, took, acts.SlotWait+2*time.Second, "each check is bounded, the wait by SlotWait")
	require.Zero(t, p.calls.Load(), "the limiter fails closed: nothing reached the provider")
	require.Zero(t, load(t, acts.Pool, n.ID).Attempts, "no attempt spent")
}

func TestAttemptMadeButNotRecordableIsHandedToTheWorkflow(t *testing.T) {
	acts := newActivities(t, "")
	n := createNotification(t, acts.Pool)
	var proxy *testenv.Proxy
	acts.Pool, proxy = proxiedPool(t, acts.Pool)
	// The database stops answering while the provider takes the call.
	p := newProvider(t, func(w http.ResponseWriter) {
		proxy.Partition()
		w.WriteHeader(http.StatusOK)
	})
	useProvider(t, acts, p.url)
	acts.RecordPatience = 3 * time.Second

	res, took, err := executeTimed(acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	require.NoError(t, err, "a made attempt is a result, never an error that would send it again")
	require.Less(t, took, acts.RecordPatience+3*time.Second, "the recording gives up after RecordPatience")
	require.Equal(t, workflows.OutcomeDelivered, res.Outcome)
	require.NotNil(t, res.Unrecorded)
	require.Equal(t, workflows.OutcomeDelivered, res.Unrecorded.Outcome)
	require.Equal(t, "DELIVERED", res.Unrecorded.Status)
	require.Equal(t, 1, res.Unrecorded.Attempt)
	require.EqualValues(t, 1, p.calls.Load())

	// The workflow's RecordAttempt stores it once the database is back.
	proxy.Heal()
	var suite testsuite.WorkflowTestSuite
	env := suite.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(acts.RecordAttempt, activity.RegisterOptions{Name: workflows.RecordAttemptActivity})
	_, err = env.ExecuteActivity(workflows.RecordAttemptActivity, *res.Unrecorded)
	require.NoError(t, err)
	got := load(t, acts.Pool, n.ID)
	require.Equal(t, notification.StatusDelivered, got.Status)
	require.Equal(t, 1, got.Attempts)
	require.Len(t, attempts(t, acts.Pool, n.ID), 1)
}

func TestRedirectIsAFailedAttemptAndIsNotFollowed(t *testing.T) {
	elsewhere := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			p := newProvider(t, func(w http.ResponseWriter) {
				w.Header().Set("Location", elsewhere.url)
				w.WriteHeader(code)
			})
			acts := newActivities(t, p.url)
			n := createNotification(t, acts.Pool)

			res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

			require.Equal(t, workflows.OutcomeRetry, res.Outcome)
			require.Equal(t, code, res.StatusCode)
			require.Contains(t, res.Error, "redirect")
			require.NotEqual(t, notification.StatusDelivered, load(t, acts.Pool, n.ID).Status)
		})
	}
	require.Zero(t, elsewhere.calls.Load(), "the body and its signature never went to the redirect's target")
}

func TestFastPathTakesAFreeSlotJustBeforeTheSend(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	rdb, prefix := testenv.Redis(t)
	acts.Limiter = ratelimit.New(rdb, prefix, map[string]int{string(notification.SMS): 1})
	// One slot a second with a burst of 2: the first two fast-path attempts
	// take a slot each and send; the third finds none and defers to the
	// task queue without sending.
	var last store.Notification
	var res workflows.DeliverResult
	for i := range 3 {
		last = createNotification(t, acts.Pool)
		res = deliver(t, acts, workflows.DeliverInput{NotificationID: last.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(last.Channel), FastPath: true})
		if i < 2 {
			require.Equal(t, workflows.OutcomeDelivered, res.Outcome, "attempt %d", i+1)
		}
	}

	require.Equal(t, workflows.OutcomeDeferred, res.Outcome)
	require.EqualValues(t, 2, p.calls.Load(), "a deferred attempt sends nothing")
	require.Empty(t, attempts(t, acts.Pool, last.ID), "and records nothing: the queue makes the same attempt")
}

func TestFastPathDefersWhenItsCallsAreBusy(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	acts.FastPathCalls = make(chan struct{}, 1)
	acts.FastPathCalls <- struct{}{} // one call in flight already
	n := createNotification(t, acts.Pool)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel), FastPath: true})

	require.Equal(t, workflows.OutcomeDeferred, res.Outcome)
	require.Zero(t, p.calls.Load(), "nothing sent")
	require.Empty(t, attempts(t, acts.Pool, n.ID), "nothing recorded: the queue's attempt, the same one, follows")
}

func TestRetriedWorkflowTaskCountsTheLostFastPathAttemptAndSendsNothing(t *testing.T) {
	p := newProvider(t, func(w http.ResponseWriter) { w.WriteHeader(http.StatusOK) })
	acts := newActivities(t, p.url)
	n := createNotification(t, acts.Pool)
	// The first try of the fast path began, then its worker died mid-call.
	_, _, err := store.BeginAttempt(context.Background(), acts.Pool, n.ID, 1, true)
	require.NoError(t, err)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel), FastPath: true})

	require.Equal(t, workflows.OutcomeRetry, res.Outcome, "the lost try counts as made: the next attempt follows a backoff, through the queue")
	require.Zero(t, p.calls.Load(), "the retried task sends nothing itself")
	require.Equal(t, 1, load(t, acts.Pool, n.ID).Attempts)
}

func TestCancelRequestAbortsACallInFlight(t *testing.T) {
	acts := newActivities(t, "")
	n := createNotification(t, acts.Pool)
	arrived := make(chan struct{})
	useProvider(t, acts, newRawProvider(t, func(w http.ResponseWriter, r *http.Request) {
		close(arrived)
		select { // a slow provider; the call is aborted long before
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		w.WriteHeader(http.StatusOK)
	}))
	go func() {
		<-arrived
		_, _, _ = store.RequestCancel(context.Background(), acts.Pool, n.ID)
	}()

	start := time.Now()
	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel), FastPath: true})

	require.Equal(t, workflows.OutcomeCancelled, res.Outcome, "the fast-path call saw the cancel on the row")
	require.Less(t, time.Since(start), 4*time.Second, "without waiting for the workflow task to end")
	rows := attempts(t, acts.Pool, n.ID)
	require.Len(t, rows, 1, "the aborted call is in the attempt log")
	require.Equal(t, string(workflows.OutcomeCancelled), rows[0].Outcome)
}

func TestTwoXXThatArrivesAsTheCallIsAbortedIsADelivery(t *testing.T) {
	acts := newActivities(t, "")
	n := createNotification(t, acts.Pool)
	srv := newRawProvider(t, func(w http.ResponseWriter, r *http.Request) {
		// The provider took it and says so, then the rest of its reply is
		// slow; meanwhile the notification is cancelled.
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		_, _, _ = store.RequestCancel(context.Background(), acts.Pool, n.ID)
		<-r.Context().Done()
	})
	useProvider(t, acts, srv)

	res := deliver(t, acts, workflows.DeliverInput{NotificationID: n.ID.String(), Attempt: 1, Retry: deliverPolicy, Channel: string(n.Channel)})

	require.Equal(t, workflows.OutcomeDelivered, res.Outcome, "a 2xx is a delivery, whatever happens after it")
	require.Equal(t, notification.StatusDelivered, load(t, acts.Pool, n.ID).Status)
}

// newRawProvider serves handler and returns its webhook URL. The body is
// read first, so the server notices a caller that gives up.
func newRawProvider(t *testing.T, handler http.HandlerFunc) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		handler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/webhook"
}
