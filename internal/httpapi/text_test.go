package httpapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/provider"
)

// PostgreSQL's text cannot hold NUL, and its jsonb refuses \u0000 and an
// unpaired UTF-16 surrogate escape, which encoding/json takes. Every text
// a request brings, wherever it enters, is refused with a problem naming
// it, never carried to the database to fail there as a 500.
func TestTextPostgreSQLCannotStoreIsRefusedNamingItsField(t *testing.T) {
	f := setup(t, withOperationStarter(&operationStarts{}))
	const sms = `"channel":"sms","recipient":"+14155550123","content":"hi"`
	id := uuid.NewString()
	badUTF8 := string([]byte{'k', 0xff, 0xfe})
	for _, tc := range []struct {
		name, method, path, body string
		headers                  []string
		status                   int
		field                    string
	}{
		{"operation filter.recipient with NUL", http.MethodPost, "/v1/operations",
			`{"action":"cancel","filter":{"recipient":"+1415\u00005550123"}}`, nil, 422, "filter.recipient"},
		{"dry-run filter.recipient with NUL", http.MethodPost, "/v1/operations",
			`{"action":"erase","dryRun":true,"filter":{"recipient":"a\u0000@example.com"}}`, nil, 422, "filter.recipient"},
		{"operation Idempotency-Key not UTF-8", http.MethodPost, "/v1/operations",
			`{"action":"cancel","filter":{"status":"QUEUED"}}`, []string{"Idempotency-Key", badUTF8}, 422, "Idempotency-Key"},
		{"metadata value with an unpaired high surrogate", http.MethodPost, "/v1/notifications",
			`{` + sms + `,"metadata":{"k":"\ud800"}}`, nil, 422, "metadata"},
		{"metadata key with an unpaired low surrogate", http.MethodPost, "/v1/notifications",
			`{` + sms + `,"metadata":{"\udc00":1}}`, nil, 422, "metadata"},
		{"metadata high surrogate before a non-surrogate", http.MethodPost, "/v1/notifications",
			`{` + sms + `,"metadata":{"k":["\uD83D\u0041"]}}`, nil, 422, "metadata"},
		{"metadata with NUL", http.MethodPost, "/v1/notifications",
			`{` + sms + `,"metadata":{"k":{"n":"a\u0000"}}}`, nil, 422, "metadata"},
		{"content with NUL", http.MethodPost, "/v1/notifications",
			`{"channel":"sms","recipient":"+14155550123","content":"a\u0000"}`, nil, 422, "content"},
		{"subject with NUL", http.MethodPost, "/v1/notifications",
			`{"channel":"email","recipient":"a@example.com","subject":"s\u0000","content":"hi"}`, nil, 422, "subject"},
		{"email recipient with NUL", http.MethodPost, "/v1/notifications",
			`{"channel":"email","recipient":"\"a\u0000\"@example.com","subject":"s","content":"hi"}`, nil, 422, "recipient"},
		{"push recipient with NUL", http.MethodPost, "/v1/notifications",
			`{"channel":"push","recipient":"tok\u0000en","content":"hi"}`, nil, 422, "recipient"},
		{"idempotencyKey with NUL", http.MethodPost, "/v1/notifications",
			`{` + sms + `,"idempotencyKey":"k\u0000"}`, nil, 422, "idempotencyKey"},
		{"Idempotency-Key not UTF-8", http.MethodPost, "/v1/notifications",
			`{` + sms + `}`, []string{"Idempotency-Key", badUTF8}, 422, "Idempotency-Key"},
		{"batch item metadata with an unpaired surrogate", http.MethodPost, "/v1/notifications/batch",
			`{"notifications":[{` + sms + `},{` + sms + `,"metadata":{"k":"\udfff"}}]}`, nil, 422, "notifications[1].metadata"},
		{"batch item idempotencyKey with NUL", http.MethodPost, "/v1/notifications/batch",
			`{"notifications":[{` + sms + `,"idempotencyKey":"\u0000"}]}`, nil, 422, "notifications[0].idempotencyKey"},
		{"batch Idempotency-Key not UTF-8", http.MethodPost, "/v1/notifications/batch",
			`{"notifications":[{` + sms + `}]}`, []string{"Idempotency-Key", badUTF8}, 422, "Idempotency-Key"},
		{"retry Idempotency-Key not UTF-8", http.MethodPost, "/v1/notifications/" + id + "/retry",
			"", []string{"Idempotency-Key", badUTF8}, 422, "Idempotency-Key"},
		{"list batchId with NUL", http.MethodGet, "/v1/notifications?batchId=%00", "", nil, 400, "batchId"},
		{"list status with NUL", http.MethodGet, "/v1/notifications?status=QUEUED%00", "", nil, 400, "status"},
		{"list createdFrom with NUL", http.MethodGet, "/v1/notifications?createdFrom=2026-01-01T00:00:00Z%00", "", nil, 400, "createdFrom"},
		{"list cursor with NUL", http.MethodGet, "/v1/notifications?cursor=%00", "", nil, 400, "cursor"},
		{"list cursor not UTF-8", http.MethodGet, "/v1/notifications?cursor=%FF%FE", "", nil, 400, "cursor"},
		{"operations cursor with NUL", http.MethodGet, "/v1/operations?cursor=%00", "", nil, 400, "cursor"},
		{"notification id with NUL", http.MethodGet, "/v1/notifications/%00", "", nil, 400, "id"},
		{"batch id with NUL", http.MethodGet, "/v1/batches/" + id[:35] + "%00", "", nil, 400, "batchId"},
		{"operation id with NUL", http.MethodGet, "/v1/operations/%00", "", nil, 400, "id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			if tc.body != "" {
				body = []byte(tc.body)
			}
			resp, raw := f.in(t).do(tc.method, tc.path, body, tc.headers...)
			p := requireProblem(t, resp, raw, tc.status)
			require.Contains(t, fieldNames(p), tc.field, "body: %s", raw)
		})
	}
	require.Zero(t, count(t, f.pool, "notifications"), "nothing was stored")
	require.Zero(t, count(t, f.pool, "operations"), "nothing was stored")

	// Escapes jsonb takes are taken: a surrogate pair, and an escaped
	// backslash before "u0000" (the text \u0000, not a NUL).
	f.create(`{` + sms + `,"metadata":{"emoji":"\ud83d\ude00","text":"\\u0000","\uD83D\uDE00":["\\\ud83d\ude00"]}}`)
}

// A receipt is signed by its provider, but what it says still reaches
// PostgreSQL (the message id it names is looked up; its reason is stored
// on the attempt by the notification's workflow, where text PostgreSQL
// refuses would fail the settling activity again and again): text that
// cannot be stored is a 422 naming it, and no workflow hears of it.
func TestASignedReceiptWithTextPostgreSQLCannotStoreIsRefusedNamingItsField(t *testing.T) {
	f := setup(t, withProviders(t))
	id := f.sent("push", "hook", "")
	body := `{"webhookId":"` + id.String() + `","status":"failed","reason":"mailbox\u0000full"}`
	resp, raw := f.post("/v1/receipts/hook", body, signedReceipt(t, hookSecret, body)...)
	p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
	require.Equal(t, []string{"reason"}, fieldNames(p))

	path := "/v1/receipts/tw?notification=" + id.String()
	for _, tc := range []struct {
		form  url.Values
		field string
	}{
		{url.Values{"MessageSid": {"SM\x00"}, "MessageStatus": {"delivered"}}, "MessageSid"},
		{url.Values{"MessageSid": {"SM0123"}, "MessageStatus": {"failed"}, "ErrorCode": {"30003\x00"}}, "ErrorCode"},
		{url.Values{"MessageSid": {"SM\xff"}, "MessageStatus": {"failed"}}, "MessageSid"},
	} {
		sig := provider.TwilioSignature(twilioToken, receiptsBase+path, tc.form)
		resp, raw := f.post(path, tc.form.Encode(), "Content-Type", "application/x-www-form-urlencoded", "Authorization", "", "X-Twilio-Signature", sig)
		p := requireProblem(t, resp, raw, http.StatusUnprocessableEntity)
		require.Equal(t, []string{tc.field}, fieldNames(p), "form %v", tc.form)
	}
	require.Empty(t, f.signals.Calls(), "no workflow heard of them")
}
