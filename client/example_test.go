package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/dispatch-engine/dispatch-engine/client"
)

// Send an sms, wait for it to be delivered, and tell a refused request by its
// problem. It needs a running API (make run), so it has no Output.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	api, err := client.New("http://127.0.0.1:8080", "my-api-key",
		client.WithHTTPClient(&http.Client{Timeout: 10 * time.Second}))
	if err != nil {
		log.Fatal(err)
	}

	n, err := api.Send(ctx, client.CreateNotification{
		Channel:   client.ChannelSms,
		Recipient: "+14155550123",
		Content:   "Your code is 1234",
	}, client.WithIdempotencyKey("login-code-42"))
	var p *client.Problem
	if errors.As(err, &p) {
		// e.g. "422 Validation failed: recipient: must be an E.164 phone number"
		log.Fatalf("refused (%s): %v", p.Type, p)
	} else if err != nil {
		log.Fatal(err)
	}

	n, err = api.Wait(ctx, n.ID, time.Second)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(n.Status, n.Attempts)
}

// Page through the failed sms of the last hour.
func ExampleDispatch_ListAll() {
	ctx := context.Background()
	api, err := client.New("http://127.0.0.1:8080", "my-api-key")
	if err != nil {
		log.Fatal(err)
	}
	status, channel, since := client.StatusFAILED, client.ChannelSms, time.Now().Add(-time.Hour)
	for n, err := range api.ListAll(ctx, &client.ListNotificationsParams{Status: &status, Channel: &channel, CreatedFrom: &since}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(n.ID, n.Recipient, *n.LastError)
	}
}
