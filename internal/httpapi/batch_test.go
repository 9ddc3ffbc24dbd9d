package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

type batchAnswer struct {
	BatchID       string `json:"batchId"`
	Count         int    `json:"count"`
	Notifications []struct {
		ID             string `json:"id"`
		BatchID        string `json:"batchId"`
		Content        string `json:"content"`
		Status         string `json:"status"`
		IdempotencyKey string `json:"idempotencyKey"`
	} `json:"notifications"`
}

func (f *fixture) createBatch(body string, headers ...string) (*http.Response, batchAnswer) {
	f.t.Helper()
	resp, raw := f.post("/v1/notifications/batch", body, headers...)
	require.Contains(f.t, []int{http.StatusOK, http.StatusAccepted}, resp.StatusCode, "body: %.500s", raw)
	var b batchAnswer
	require.NoError(f.t, json.Unmarshal(raw, &b))
	return resp, b
}

type batchSummary struct {
	BatchID   string         `json:"batchId"`
	Total     int            `json:"total"`
	ByStatus  map[string]int `json:"byStatus"`
	ByChannel map[string]int `json:"byChannel"`
}

func (f *fixture) batchSummary(id string) batchSummary {
	f.t.Helper()
	resp, body := f.get("/v1/batches/" + id)
	require.Equal(f.t, http.StatusOK, resp.StatusCode, "body: %s", body)
	var s batchSummary
	require.NoError(f.t, json.Unmarshal(body, &s))
	return s
}

func TestBatchStoresEveryNotificationWithItsOutboxRowInRequestOrder(t *testing.T) {
	f := setup(t)
	resp, b := f.createBatch(`{"notifications":[
		{"channel":"sms","recipient":"+14155550123","content":"first","priority":"HIGH"},
		{"channel":"email","recipient":"u@example.com","subject":"s","content":"second","metadata":{"k":1}},
		{"channel":"push","recipient":"tok","content":"third","idempotencyKey":"item-key"}]}`)
	require.Equal(t, http.StatusAccepted, resp.StatusCode)
	require.Equal(t, "/v1/batches/"+b.BatchID, resp.Header.Get("Location"))
	require.Equal(t, 3, b.Count)
	require.Len(t, b.Notifications, 3)
	for i, want := range []string{"first", "second", "third"} {
		require.Equal(t, want, b.Notifications[i].Content)
		require.Equal(t, b.BatchID, b.Notifications[i].BatchID)
		require.Equal(t, "ACCEPTED", b.Notifications[i].Status)
	}
	require.Equal(t, "item-key", b.Notifications[2].IdempotencyKey)

	require.Equal(t, 3, count(t, f.pool, "notifications"))
	require.Equal(t, 3, count(t, f.pool, "outbox"))
	require.Equal(t, 1, count(t, f.pool, "batches"))
	var total int
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT total FROM batches WHERE id = $1`, b.BatchID).Scan(&total))
	require.Equal(t, 3, total)

	// Each is a notification like any other.
	resp, body := f.get("/v1/notifications/" + b.Notifications[1].ID)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), `"batch":"/v1/batches/`+b.BatchID+`"`)
}

func TestBatchWithAnyBadItemIs422NamingEveryBadItemAndStoresNothing(t *testing.T) {
	f := setup(t)
	resp, body := f.post("/v1/notifications/batch", `{"notifications":[
		{"channel":"sms","recipient":"+14155550123","content":"fine"},
		{"channel":"sms","recipient":"12345","content":""},
		{"channel":"email","recipient":"u@example.com","content":"no subject"},
		"not an object",
		{"channel":"push","recipient":"tok","content":"hi","colour":"red"},
		{"channel":7,"recipient":"tok","content":"hi"},
		{"channel":"push","recipient":"tok","content":"hi","idempotencyKey":"dup"},
		{"channel":"push","recipient":"tok","content":"ho","idempotencyKey":"dup"}]}`)
	p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Equal(t, "/problems/validation-error", p.Type)
	require.Equal(t, []string{
		"notifications[1].recipient",
		"notifications[1].content",
		"notifications[2].subject",
		"notifications[3]",
		"notifications[4].colour",
		"notifications[5].channel",
		"notifications[7].idempotencyKey",
	}, fieldNames(p))
	require.Zero(t, count(t, f.pool, "notifications"))
	require.Zero(t, count(t, f.pool, "outbox"))
	require.Zero(t, count(t, f.pool, "batches"))
}

func TestBatchMustHoldOneTo1000Notifications(t *testing.T) {
	f := setup(t)
	for _, body := range []string{`{"notifications":[]}`, `{}`, `{"notifications":null}`, batchOf(1001)} {
		resp, raw := f.post("/v1/notifications/batch", body)
		p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
		require.Equal(t, []string{"notifications"}, fieldNames(p), "body %.60s", body)
	}
	resp, raw := f.post("/v1/notifications/batch", `{"notifications":{}}`)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"notifications"}, fieldNames(p))
	resp, raw = f.post("/v1/notifications/batch", `{"notifications":[]`)
	requireProblem(t, resp, raw, http.StatusBadRequest)
	require.Zero(t, count(t, f.pool, "notifications"))

	_, b := f.createBatch(batchOf(1000))
	require.Equal(t, 1000, b.Count)
	require.Equal(t, 1000, count(t, f.pool, "outbox"))
}

func TestBatchOf300IsSummarisedAndListedAsExactly300Notifications(t *testing.T) {
	f := setup(t)
	f.create(smsBody) // not in the batch
	_, b := f.createBatch(batchOf(300))

	s := f.batchSummary(b.BatchID)
	require.Equal(t, 300, s.Total)
	require.Equal(t, map[string]int{"ACCEPTED": 300, "QUEUED": 0, "SCHEDULED": 0, "PROCESSING": 0, "RETRYING": 0, "SENT": 0,
		"DELIVERED": 0, "FAILED": 0, "CANCELLED": 0, "SKIPPED": 0}, s.ByStatus)
	require.Equal(t, map[string]int{"sms": 300, "email": 0, "push": 0}, s.ByChannel)

	ids := f.listAll("batchId="+b.BatchID, 100)
	require.Len(t, ids, 300)
	distinct := map[string]bool{}
	for _, id := range ids {
		distinct[id] = true
	}
	require.Len(t, distinct, 300)
	for _, n := range b.Notifications {
		require.True(t, distinct[n.ID], "%s is listed", n.ID)
	}
}

func TestBatchSummaryFollowsStatusChanges(t *testing.T) {
	f := setup(t)
	_, b := f.createBatch(`{"notifications":[
		{"channel":"sms","recipient":"+14155550123","content":"a"},
		{"channel":"email","recipient":"u@example.com","subject":"s","content":"b"},
		{"channel":"email","recipient":"v@example.com","subject":"s","content":"c"}]}`)
	resp, body := f.post("/v1/notifications/"+b.Notifications[1].ID+"/cancel", "", "Content-Type", "")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)

	s := f.batchSummary(b.BatchID)
	require.Equal(t, 2, s.ByStatus["ACCEPTED"])
	require.Equal(t, 1, s.ByStatus["CANCELLED"])
	require.Equal(t, map[string]int{"sms": 1, "email": 2, "push": 0}, s.ByChannel)
}

func TestUnknownBatchIs404AndMalformedBatchIdIs400(t *testing.T) {
	f := setup(t)
	id := uuid.NewString()
	resp, body := f.get("/v1/batches/" + id)
	p := requireProblem(t, resp, body, http.StatusNotFound)
	require.Contains(t, p.Detail, id)
	resp, body = f.get("/v1/batches/not-a-uuid")
	p = requireProblem(t, resp, body, http.StatusBadRequest)
	require.Equal(t, []string{"batchId"}, fieldNames(p))
}

func TestBatchRetriedWithTheSameIdempotencyKeyReplaysTheFirstAnswer(t *testing.T) {
	f := setup(t)
	body := batchOf(3)
	first, b := f.createBatch(body, "Idempotency-Key", "batch-1")
	require.Equal(t, http.StatusAccepted, first.StatusCode)

	again, replay := f.createBatch(body, "Idempotency-Key", "batch-1")
	require.Equal(t, http.StatusOK, again.StatusCode)
	require.Equal(t, "true", again.Header.Get("Idempotent-Replayed"))
	require.Equal(t, b, replay)
	require.Equal(t, 3, count(t, f.pool, "notifications"))
	require.Equal(t, 1, count(t, f.pool, "batches"))

	// The same key for other items is a conflict.
	resp, raw := f.post("/v1/notifications/batch", batchOf(4), "Idempotency-Key", "batch-1")
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, "/problems/idempotency-key-reused", p.Type)
	require.Equal(t, 3, count(t, f.pool, "notifications"))
}

func TestBatchWithAnItemKeyAlreadyTakenIs422NamingEachItemAndStoresNothing(t *testing.T) {
	f := setup(t)
	taken := f.create(`{"channel":"sms","recipient":"+14155550123","content":"x","idempotencyKey":"taken-1"}`)
	_, earlier := f.createBatch(`{"notifications":[{"channel":"sms","recipient":"+14155550123","content":"y","idempotencyKey":"taken-2"}]}`)

	resp, body := f.post("/v1/notifications/batch", `{"notifications":[
		{"channel":"sms","recipient":"+14155550123","content":"fresh","idempotencyKey":"fresh-1"},
		{"channel":"sms","recipient":"+14155550123","content":"x","idempotencyKey":"taken-1"},
		{"channel":"sms","recipient":"+14155550123","content":"no key"},
		{"channel":"sms","recipient":"+14155550123","content":"other","idempotencyKey":"taken-2"}]}`)
	p := requireProblem(t, resp, body, http.StatusUnprocessableEntity)
	require.Equal(t, "/problems/idempotency-key-reused", p.Type)
	require.Equal(t, []string{"notifications[1].idempotencyKey", "notifications[3].idempotencyKey"}, fieldNames(p))
	require.Contains(t, p.Errors[0].Message, taken)
	require.Contains(t, p.Errors[1].Message, earlier.Notifications[0].ID)

	require.Equal(t, 2, count(t, f.pool, "notifications"), "nothing of the refused batch is stored")
	require.Equal(t, 2, count(t, f.pool, "outbox"))
	require.Equal(t, 1, count(t, f.pool, "batches"))
}

func TestBatchItemKeyIsTheNotificationsKey(t *testing.T) {
	f := setup(t)
	_, b := f.createBatch(`{"notifications":[{"channel":"push","recipient":"tok","content":"hi","idempotencyKey":"shared"}]}`)

	resp, body := f.post("/v1/notifications", `{"channel":"push","recipient":"tok","content":"hi","idempotencyKey":"shared"}`)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.Equal(t, b.Notifications[0].ID, extractID(t, body))
	resp, body = f.post("/v1/notifications", `{"channel":"push","recipient":"tok","content":"other","idempotencyKey":"shared"}`)
	requireProblem(t, resp, body, http.StatusUnprocessableEntity)
}

func TestBatchIsStoredWithOneInsertStatementNotOnePerNotification(t *testing.T) {
	f := setup(t)
	f.queries.reset()
	f.createBatch(batchOf(500))
	sqls := f.queries.all()
	inserts := 0
	for _, q := range sqls {
		if strings.Contains(q, "INSERT INTO notifications") {
			inserts++
		}
	}
	require.Equal(t, 1, inserts, "statements: %q", sqls)
	require.LessOrEqual(t, len(sqls), 4, "begin, batch row, notifications with outbox rows, commit: %q", sqls)
}

func TestBatchOfEveryChannelKeepsItsOrderAcross1000Items(t *testing.T) {
	f := setup(t)
	var b strings.Builder
	b.WriteString(`{"notifications":[`)
	for i := range 1000 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"channel":"push","recipient":"tok-` + strconv.Itoa(i) + `","content":"` + strconv.Itoa(i) + `"}`)
	}
	b.WriteString(`]}`)
	_, answer := f.createBatch(b.String())
	for i, n := range answer.Notifications {
		require.Equal(t, strconv.Itoa(i), n.Content)
	}
}

func TestConcurrentBatchesSharingItemKeysInAnotherOrderNeverDeadlock(t *testing.T) {
	f := setup(t)
	item := func(key string) string {
		return `{"channel":"sms","recipient":"+14155550123","content":"x","idempotencyKey":"` + key + `"}`
	}
	for round := range 10 {
		keys := make([]string, 20)
		for i := range keys {
			keys[i] = fmt.Sprintf("round-%d-key-%02d", round, i)
		}
		forward, backward := make([]string, len(keys)), make([]string, len(keys))
		for i, k := range keys {
			forward[i], backward[len(keys)-1-i] = item(k), item(k)
		}
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for i, items := range [][]string{forward, backward} {
			wg.Go(func() {
				resp, _ := f.post("/v1/notifications/batch", `{"notifications":[`+strings.Join(items, ",")+`]}`)
				codes[i] = resp.StatusCode
			})
		}
		wg.Wait()
		// One batch takes the keys; the other finds them taken. Taking
		// them in another order must not deadlock the two (a 500).
		require.ElementsMatch(t, []int{http.StatusAccepted, http.StatusUnprocessableEntity}, codes, "round %d", round)
	}
}
