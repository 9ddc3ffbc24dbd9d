package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/client"
	"github.com/dispatch-engine/dispatch-engine/cmd/dispatchctl/app"
)

// batchAPI answers POST /v1/notifications/batch by accepting every item,
// and keeps the batch ids it made, in order.
type batchAPI struct {
	*fakeAPI
	mu  sync.Mutex
	ids []uuid.UUID
}

func newBatchAPI(t *testing.T) *batchAPI {
	b := &batchAPI{fakeAPI: newFakeAPI(t)}
	b.handle("POST /v1/notifications/batch", func(w http.ResponseWriter, r *http.Request) {
		var body client.CreateBatch
		require.NoError(t, json.NewDecoder(r.Body).Decode(&body))
		id := newID()
		b.mu.Lock()
		b.ids = append(b.ids, id)
		b.mu.Unlock()
		acc := client.BatchAccepted{BatchID: id, Count: len(body.Notifications)}
		for _, item := range body.Notifications {
			n := notification(uuid.New(), client.StatusACCEPTED)
			n.Channel, n.Recipient, n.Content, n.Subject, n.BatchID = item.Channel, item.Recipient, item.Content, item.Subject, &id
			n.Links.Batch = ptr("/v1/batches/" + id.String())
			acc.Notifications = append(acc.Notifications, n)
		}
		w.Header().Set("Location", "/v1/batches/"+id.String())
		answer(w, http.StatusAccepted, acc)
	})
	return b
}

// sentItems decodes the items of every batch request, in order.
func (b *batchAPI) sentItems(t *testing.T) [][]map[string]any {
	var out [][]map[string]any
	for _, r := range b.requests() {
		if r.Path != "/v1/notifications/batch" {
			continue
		}
		var body struct {
			Notifications []map[string]any `json:"notifications"`
		}
		require.NoError(t, json.Unmarshal(r.Body, &body))
		out = append(out, body.Notifications)
	}
	return out
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.WriteFile(path, []byte(content), 0o644))
	return path
}

func TestBatchFromCSVIsSplitIntoRequestsOfAThousand(t *testing.T) {
	b := newBatchAPI(t)
	var csv strings.Builder
	csv.WriteString("\ufeffchannel,to,content,subject,priority\n")
	for i := range 2500 {
		if i%2 == 0 {
			fmt.Fprintf(&csv, "sms,+1415555%04d,\"code %d, sms\",,high\n", i, i)
		} else {
			fmt.Fprintf(&csv, "email,user%d@example.com,Hello %d,Welcome,\n", i, i)
		}
	}
	file := writeFile(t, "campaign.csv", csv.String())

	res := b.dispatchctl("batch", file, "--idempotency-key", "spring")

	require.Equal(t, app.ExitOK, res.code, res.stderr)
	reqs := b.requests()
	require.Len(t, reqs, 3)
	for i, r := range reqs {
		assert.Equal(t, "POST /v1/notifications/batch", r.Method+" "+r.Path)
		assert.Equal(t, "Bearer test-key", r.Header.Get("Authorization"))
		assert.Equal(t, fmt.Sprintf("spring-%d", i+1), r.Header.Get("Idempotency-Key"))
	}
	items := b.sentItems(t)
	assert.Len(t, items[0], 1000)
	assert.Len(t, items[1], 1000)
	assert.Len(t, items[2], 500)
	assert.Equal(t, map[string]any{"channel": "sms", "recipient": "+14155550000", "content": "code 0, sms", "priority": "HIGH"}, items[0][0])
	assert.Equal(t, map[string]any{"channel": "email", "recipient": "user1001@example.com", "content": "Hello 1001", "subject": "Welcome"}, items[1][1])
	assert.Equal(t, "+14155552498", items[2][498]["recipient"])

	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	require.Len(t, lines, 5, res.stdout)
	assert.Regexp(t, `^BATCH\s+COUNT`, lines[0])
	assert.Regexp(t, `^`+b.ids[0].String()+`\s+1000$`, lines[1])
	assert.Regexp(t, `^`+b.ids[1].String()+`\s+1000$`, lines[2])
	assert.Regexp(t, `^`+b.ids[2].String()+`\s+500$`, lines[3])
	assert.Equal(t, "3 batches, 2500 notifications (idempotency key spring)", lines[4])
	assert.Contains(t, res.stderr, "sending", "a progress bar for a file of more than one request")
	assert.Contains(t, res.stderr, "2500/2500")
}

func TestBatchFromJSONArrayAndObject(t *testing.T) {
	var items []string
	for i := range 1001 {
		items = append(items, fmt.Sprintf(`{"channel":"push","recipient":"device-%d","content":"shipped","metadata":{"order":%d}}`, i, i))
	}
	for name, doc := range map[string]string{
		"array":  "[" + strings.Join(items, ",") + "]",
		"object": `{"notifications":[` + strings.Join(items, ",") + `]}`,
	} {
		t.Run(name, func(t *testing.T) {
			b := newBatchAPI(t)

			res := b.dispatchctl("batch", "--json", writeFile(t, "n.json", doc))

			require.Equal(t, app.ExitOK, res.code, res.stderr)
			sent := b.sentItems(t)
			require.Len(t, sent, 2)
			assert.Len(t, sent[0], 1000)
			assert.Len(t, sent[1], 1)
			assert.Equal(t, map[string]any{"channel": "push", "recipient": "device-1000", "content": "shipped", "metadata": map[string]any{"order": float64(1000)}}, sent[1][0])
			keys := []string{b.requests()[0].Header.Get("Idempotency-Key"), b.requests()[1].Header.Get("Idempotency-Key")}
			require.True(t, strings.HasPrefix(keys[0], "dispatchctl-") && strings.HasSuffix(keys[0], "-1"), "a key is made up: %s", keys[0])
			assert.Equal(t, strings.TrimSuffix(keys[0], "-1")+"-2", keys[1])

			var out struct {
				Count          int    `json:"count"`
				IdempotencyKey string `json:"idempotencyKey"`
				Batches        []struct {
					BatchID  uuid.UUID `json:"batchId"`
					Count    int       `json:"count"`
					Replayed bool      `json:"replayed"`
				} `json:"batches"`
			}
			require.NoError(t, json.Unmarshal([]byte(res.stdout), &out), res.stdout)
			assert.Equal(t, 1001, out.Count)
			assert.Equal(t, strings.TrimSuffix(keys[0], "-1"), out.IdempotencyKey)
			require.Len(t, out.Batches, 2)
			assert.Equal(t, b.ids[0], out.Batches[0].BatchID)
			assert.Equal(t, 1000, out.Batches[0].Count)
			assert.Equal(t, 1, out.Batches[1].Count)
		})
	}
}

func TestBatchOfOneRequestHasNoProgressBar(t *testing.T) {
	b := newBatchAPI(t)
	res := b.dispatchctl("batch", writeFile(t, "n.csv", "to,channel,content\n+14155550123,sms,hi\n\n+14155550124,sms,ho\n"), "--idempotency-key", "k")
	require.Equal(t, app.ExitOK, res.code, res.stderr)
	require.Len(t, b.sentItems(t), 1)
	assert.Len(t, b.sentItems(t)[0], 2, "the blank line is skipped")
	assert.Equal(t, "k-1", b.only().Header.Get("Idempotency-Key"))
	assert.Empty(t, res.stderr)
}

func TestBatchFilesThatCannotBeReadExitTwo(t *testing.T) {
	b := newBatchAPI(t)
	for name, content := range map[string]string{
		"unknown column": "channel,to,content,colour\nsms,+14155550123,hi,red\n",
		"missing column": "channel,content\nsms,hi\n",
		"ragged row":     "channel,to,content\nsms,+14155550123\n",
		"header only":    "channel,to,content\n",
		"empty":          "",
		"unknown field":  `[{"channel":"sms","to":"+14155550123","content":"hi"}]`,
		"bad JSON":       `[{"channel":"sms",`,
		"empty array":    `[]`,
	} {
		res := b.dispatchctl("batch", writeFile(t, "f", content))
		assert.Equal(t, app.ExitUsage, res.code, name)
		assert.Contains(t, res.stderr, "error: ", name)
	}
	assert.Empty(t, b.requests())
}

func TestBatchRefusedMidwayNamesTheFilesItemsAndHowToResume(t *testing.T) {
	b := newBatchAPI(t)
	var posts atomic.Int32
	accept := b.mux
	b.mux = http.NewServeMux()
	b.allowInvalid = true
	b.handle("POST /v1/notifications/batch", func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) == 2 {
			answerProblem(w, "req-batch-2", client.Problem{
				Type: "/problems/validation-error", Title: "Validation failed", Status: 422, Detail: "one or more fields are invalid",
				Errors: []client.FieldError{{Field: "notifications[3].recipient", Message: "must be an E.164 phone number, e.g. +14155550123"}},
			})
			return
		}
		accept.ServeHTTP(w, r)
	})
	var csv strings.Builder
	csv.WriteString("channel,to,content\n")
	for i := range 2500 {
		to := fmt.Sprintf("+1415555%04d", i)
		if i == 1003 {
			to = "0415"
		}
		fmt.Fprintf(&csv, "sms,%s,hi\n", to)
	}

	res := b.dispatchctl("batch", writeFile(t, "c.csv", csv.String()), "--idempotency-key", "spring")

	assert.Equal(t, app.ExitFailed, res.code)
	assert.Len(t, b.requests(), 2, "nothing is sent after the refused request")
	assert.Empty(t, res.stdout)
	stderr := res.stderr[strings.Index(res.stderr, "error: "):] // after the progress bar
	assert.Equal(t, `error: 422 Validation failed
  notifications[1003].recipient (line 1005): must be an E.164 phone number, e.g. +14155550123
one or more fields are invalid
request id: req-batch-2
request 2 of 3 (notifications 1000 to 1999) failed; nothing of it was stored
accepted before it: batch `+b.ids[0].String()+`, 1000 notifications
1000 of 2500 notifications were accepted
to resume, run it again with --idempotency-key spring (accepted requests are replayed, not sent twice)
`, stderr)
}

func TestBatchWaitFollowsEveryBatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		failed int
		code   int
	}{
		{"all delivered", 0, app.ExitOK},
		{"some failed", 3, app.ExitFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBatchAPI(t)
			var gets atomic.Int32
			b.handle("GET /v1/batches/{batchId}", func(w http.ResponseWriter, r *http.Request) {
				id := uuid.MustParse(r.PathValue("batchId"))
				total := 1000
				if id == b.ids[1] {
					total = 200
				}
				// Each batch is read three times before it is over.
				round := int(gets.Add(1)+1) / 2
				answer(w, http.StatusOK, batchSummary(id, total, func(s *client.BatchSummary_ByStatus) {
					switch {
					case round < 3:
						s.QUEUED, s.DELIVERED = total/2, total-total/2
					case id == b.ids[1]:
						s.FAILED, s.DELIVERED = tc.failed, total-tc.failed
					default:
						s.DELIVERED = total
					}
				}))
			})
			var csv strings.Builder
			csv.WriteString("channel,to,content\n")
			for i := range 1200 {
				fmt.Fprintf(&csv, "sms,+1415555%04d,hi\n", i)
			}

			res := b.dispatchctl("batch", writeFile(t, "c.csv", csv.String()), "--wait")

			assert.Equal(t, tc.code, res.code)
			assert.Equal(t, int32(6), gets.Load(), "each batch read until it is over, then no more")
			out := res.stdout[strings.LastIndex(res.stdout, "BATCH "):]
			lines := strings.Split(strings.TrimSpace(out), "\n")
			require.Len(t, lines, 4, res.stdout)
			assert.Regexp(t, `^BATCH\s+TOTAL\s+DELIVERED\s+FAILED\s+CANCELLED\s+SKIPPED$`, lines[0])
			assert.Regexp(t, `^`+b.ids[0].String()+`\s+1000\s+1000\s+0\s+0\s+0$`, lines[1])
			assert.Regexp(t, fmt.Sprintf(`^%s\s+200\s+%d\s+%d\s+0\s+0$`, b.ids[1], 200-tc.failed, tc.failed), lines[2])
			assert.Regexp(t, fmt.Sprintf(`^total\s+1200\s+%d\s+%d\s+0\s+0$`, 1200-tc.failed, tc.failed), lines[3])
			assert.Contains(t, res.stderr, "delivering")
			if tc.failed > 0 {
				assert.Contains(t, res.stderr, "error: 3 of 1200 notifications did not end DELIVERED\n")
			}
		})
	}
}

func TestBatchLosingTheAPIMidwayExitsThreeAndSaysHowToResume(t *testing.T) {
	b := newBatchAPI(t)
	accept := b.mux
	b.mux = http.NewServeMux()
	var posts atomic.Int32
	b.handle("POST /v1/notifications/batch", func(w http.ResponseWriter, r *http.Request) {
		if posts.Add(1) == 1 {
			accept.ServeHTTP(w, r)
			return
		}
		panic(http.ErrAbortHandler) // the connection drops before an answer
	})
	var csv strings.Builder
	csv.WriteString("channel,to,content\n")
	for i := range 1500 {
		fmt.Fprintf(&csv, "sms,+1415555%04d,hi\n", i)
	}

	res := b.dispatchctl("batch", writeFile(t, "c.csv", csv.String()), "--idempotency-key", "k")

	assert.Equal(t, app.ExitUnreachable, res.code)
	stderr := res.stderr[strings.Index(res.stderr, "error: "):]
	assert.Contains(t, stderr, "error: could not reach the API at "+b.srv.URL)
	assert.Contains(t, stderr, "\nrequest 2 of 2 (notifications 1000 to 1499) failed; it may have been stored or not\n")
	assert.Contains(t, stderr, "\n1000 of 1500 notifications were accepted\n")
	assert.Contains(t, stderr, "\nto resume, run it again with --idempotency-key k ")
}
