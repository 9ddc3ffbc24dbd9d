package httpapi_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/breaker"
	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/provider"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
	"github.com/dispatch-engine/dispatch-engine/workflows"
)

// withSendGrid routes email to a sendgrid provider "sg" whose Event
// Webhook is signed with key.
func withSendGrid(t *testing.T, key *ecdsa.PrivateKey) option {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	require.NoError(t, err)
	f, err := provider.Parse([]byte(`
providers:
  - {name: sg, kind: sendgrid, apiKey: "${SG_KEY}", from: "noreply@example.com", eventPublicKey: "${SG_EVENTS}", awaitReceipt: 1m}
routes:
  email: [sg]
`), func(k string) (string, bool) {
		return map[string]string{"SG_KEY": "SG.test", "SG_EVENTS": base64.StdEncoding.EncodeToString(der)}[k], true
	})
	require.NoError(t, err)
	set, err := provider.NewSet(&f, provider.Defaults{WebhookURL: "http://127.0.0.1:9/webhook", Timeout: time.Second})
	require.NoError(t, err)
	rdb, prefix := testenv.Redis(t)
	return withConfig(func(c *config) {
		c.Providers, c.Breakers = set, breaker.New(rdb, prefix, set.BreakerSettings())
	})
}

// sendgridBatch posts events to sg signed with key at signedAt.
func (f *fixture) sendgridBatch(key *ecdsa.PrivateKey, signedAt time.Time, events []map[string]any) (*http.Response, map[string]any) {
	f.t.Helper()
	body, err := json.Marshal(events)
	require.NoError(f.t, err)
	ts := strconv.FormatInt(signedAt.Unix(), 10)
	sig, err := provider.SendGridSignature(key, ts, body)
	require.NoError(f.t, err)
	resp, raw := f.post("/v1/receipts/sg", string(body), "Content-Type", "application/json",
		provider.SendGridTimestampHeader, ts, provider.SendGridSignatureHeader, sig)
	var answer map[string]any
	require.NoError(f.t, json.Unmarshal(raw, &answer), string(raw))
	return resp, answer
}

func sgEvent(event string, id uuid.UUID, at int64, email string) map[string]any {
	return map[string]any{"event": event, "dispatch_id": id.String(), "dispatch_attempt": "1", "timestamp": at, "email": email,
		"sg_message_id": "msg-" + id.String()[:8] + ".filter0001", "sg_event_id": uuid.NewString()}
}

// sentEmail is an email notification to address whose attempt 1 at sg
// was taken: it is SENT, awaiting its receipt.
func (f *fixture) sentEmail(address string) uuid.UUID {
	f.t.Helper()
	id := uuid.MustParse(f.create(`{"channel":"email","recipient":"` + address + `","subject":"Hi","content":"hello","category":"news"}`))
	f.attempted(id, 1, "sg", workflows.OutcomeSent, notification.StatusSent)
	return id
}

// A batch holds events about two notifications, out of order: they are
// taken in the order they happened (a's deferral before its delivery), a
// hard bounce suppresses the address and is a failed receipt without the
// address in its reason, and what is not ours or not acted on is counted.
func TestASendGridBatchOutOfOrderSettlesEachNotification(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	f := setup(t, withSendGrid(t, key))
	a, b := f.sentEmail("ada@example.com"), f.sentEmail("bob@example.com")

	bounce := sgEvent("bounce", b, 120, "bob@example.com")
	bounce["type"], bounce["status"], bounce["reason"] = "bounce", "5.1.1", "550 5.1.1 bob@example.com does not exist"
	resp, answer := f.sendgridBatch(key, time.Now(), []map[string]any{
		bounce,
		sgEvent("delivered", a, 110, "ada@example.com"),
		sgEvent("processed", a, 100, "ada@example.com"),
		sgEvent("delivered", uuid.New(), 100, "eve@example.com"),
		sgEvent("deferred", a, 105, "ada@example.com"),
	})

	require.Equal(t, http.StatusOK, resp.StatusCode, answer)
	require.Equal(t, map[string]any{"events": 5.0, "applied": 2.0, "unchanged": 1.0, "ignored": 1.0, "unknown": 1.0}, answer)
	calls := f.signals.Calls()
	require.Len(t, calls, 2)
	require.Equal(t, notification.WorkflowID(a.String()), calls[0].WorkflowID, "a's delivery happened first")
	require.Equal(t, workflows.Receipt{Provider: "sg", Status: "delivered", Attempt: 1, MessageID: "msg-" + a.String()[:8] + ".filter0001"}, calls[0].Arg)
	require.Equal(t, notification.WorkflowID(b.String()), calls[1].WorkflowID)
	got := calls[1].Arg.(workflows.Receipt)
	require.Equal(t, "failed", got.Status)
	require.Equal(t, "bounce: 5.1.1 550 5.1.1 [recipient] does not exist", got.Reason)

	var reason string
	require.NoError(t, f.pool.QueryRow(context.Background(),
		`SELECT reason FROM suppressions WHERE address = 'bob@example.com' AND notification_id = $1`, b).Scan(&reason))
	require.Equal(t, "bounced", reason)
	require.Equal(t, 1, count(t, f.pool, "suppressions"), "a's address is not suppressed")

	// Once b is settled, a delivery reported after its bounce changes nothing.
	_, err = f.pool.Exec(context.Background(), `UPDATE notifications SET status = 'FAILED', failure_reason = 'undelivered' WHERE id = $1`, b)
	require.NoError(t, err)
	resp, answer = f.sendgridBatch(key, time.Now(), []map[string]any{sgEvent("delivered", b, 130, "bob@example.com")})
	require.Equal(t, http.StatusOK, resp.StatusCode, answer)
	require.Equal(t, 1.0, answer["unchanged"], answer)
	require.Len(t, f.signals.Calls(), 2)
}

// A spam report opts the person out of the notification's category and
// suppresses the address as complained.
func TestASendGridSpamReportOptsOutOfTheCategory(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	f := setup(t, withSendGrid(t, key))
	id := f.sentEmail("ada@example.com")

	resp, answer := f.sendgridBatch(key, time.Now(), []map[string]any{sgEvent("spamreport", id, 100, "ada@example.com")})
	require.Equal(t, http.StatusOK, resp.StatusCode, answer)
	require.Equal(t, 1.0, answer["applied"], answer)
	var reason string
	require.NoError(t, f.pool.QueryRow(context.Background(), `SELECT reason FROM suppressions WHERE address = 'ada@example.com'`).Scan(&reason))
	require.Equal(t, "complained", reason)
	require.Equal(t, 1, count(t, f.pool, "opt_outs"))
}

// A forged, wrongly keyed or stale batch is refused whole and changes
// nothing.
func TestAForgedSendGridBatchIsRefused(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	f := setup(t, withSendGrid(t, key))
	id := f.sentEmail("ada@example.com")
	bounce := []map[string]any{sgEvent("bounce", id, 100, "ada@example.com")}

	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	for name, post := range map[string]func() (*http.Response, []byte){
		"another key": func() (*http.Response, []byte) {
			body, _ := json.Marshal(bounce)
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			sig, _ := provider.SendGridSignature(other, ts, body)
			return f.post("/v1/receipts/sg", string(body), "Content-Type", "application/json",
				provider.SendGridTimestampHeader, ts, provider.SendGridSignatureHeader, sig)
		},
		"forged body": func() (*http.Response, []byte) {
			ts := strconv.FormatInt(time.Now().Unix(), 10)
			sig, _ := provider.SendGridSignature(key, ts, []byte(`[]`))
			body, _ := json.Marshal(bounce)
			return f.post("/v1/receipts/sg", string(body), "Content-Type", "application/json",
				provider.SendGridTimestampHeader, ts, provider.SendGridSignatureHeader, sig)
		},
		"stale": func() (*http.Response, []byte) {
			body, _ := json.Marshal(bounce)
			ts := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
			sig, _ := provider.SendGridSignature(key, ts, body)
			return f.post("/v1/receipts/sg", string(body), "Content-Type", "application/json",
				provider.SendGridTimestampHeader, ts, provider.SendGridSignatureHeader, sig)
		},
		"unsigned": func() (*http.Response, []byte) {
			body, _ := json.Marshal(bounce)
			return f.post("/v1/receipts/sg", string(body), "Content-Type", "application/json")
		},
	} {
		resp, raw := post()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s: %s", name, raw)
		require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"), name)
	}
	require.Empty(t, f.signals.Calls())
	require.Equal(t, 0, count(t, f.pool, "suppressions"))
}

// An event naming no attempt is about the one attempt the notification
// made at the provider; a notification that made none there is not ours.
func TestASendGridEventNamingNoAttempt(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	f := setup(t, withSendGrid(t, key))
	sent := f.sentEmail("ada@example.com")
	unsent := uuid.MustParse(f.create(`{"channel":"email","recipient":"bob@example.com","subject":"Hi","content":"hello"}`))
	a, b := sgEvent("delivered", sent, 100, "ada@example.com"), sgEvent("bounce", unsent, 100, "bob@example.com")
	delete(a, "dispatch_attempt")
	delete(b, "dispatch_attempt")

	resp, answer := f.sendgridBatch(key, time.Now(), []map[string]any{a, b})
	require.Equal(t, http.StatusOK, resp.StatusCode, answer)
	require.Equal(t, map[string]any{"events": 2.0, "applied": 1.0, "unchanged": 0.0, "ignored": 0.0, "unknown": 1.0}, answer)
	require.Len(t, f.signals.Calls(), 1)
	require.Equal(t, 0, count(t, f.pool, "suppressions"))
}
