// Command deploylint checks the deployment files offline, with the libraries
// the real tools use: docker-compose.yml through the Compose Specification
// loader (schema, interpolation with .env.example, references between
// services, volumes and networks), the Dockerfile through BuildKit's
// `docker build --check` rules, deploy/prometheus/prometheus.yml through
// Prometheus's own config loader, and deploy/k8s through kustomize and a
// strict decode into the Kubernetes API types. Any finding fails.
//
//	go run . -root ../..
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
)

func main() {
	root := flag.String("root", ".", "repository root")
	flag.Parse()
	ctx := context.Background()
	checks := []struct {
		name string
		run  func(context.Context, string) ([]string, error)
	}{
		{"docker-compose.yml", checkCompose},
		{"Dockerfile", checkDockerfile},
		{"deploy/prometheus/prometheus.yml", checkPrometheus},
		{"deploy/k8s", checkKubernetes},
	}
	failed := false
	for _, c := range checks {
		findings, err := c.run(ctx, *root)
		if err != nil {
			findings = append(findings, err.Error())
		}
		if len(findings) == 0 {
			fmt.Printf("ok    %s\n", c.name)
			continue
		}
		failed = true
		fmt.Printf("FAIL  %s\n", c.name)
		for _, f := range findings {
			fmt.Printf("      %s\n", f)
		}
	}
	if failed {
		os.Exit(1)
	}
}
