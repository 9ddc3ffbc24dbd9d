// Command healthcheck GETs one URL and exits 0 on a 2xx answer, 1 otherwise.
// The container image has no shell or curl; its HEALTHCHECK runs this.
//
//	healthcheck http://127.0.0.1:8080/livez
package main

import (
	"fmt"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: healthcheck URL")
		os.Exit(2)
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "healthcheck:", err)
		os.Exit(1)
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		fmt.Fprintln(os.Stderr, "healthcheck:", os.Args[1], "answered", resp.Status)
		os.Exit(1)
	}
}
