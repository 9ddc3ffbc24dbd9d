package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// checkCompose loads docker-compose.yml the way `docker compose config`
// does: schema validation, interpolation with .env.example as the project's
// .env (the quick start copies it), and the consistency check (depends_on,
// volumes, networks, secrets and configs name defined ones). Services'
// env_file contents are not read, so a local .env does not change the result.
func checkCompose(ctx context.Context, root string) ([]string, error) {
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnvFiles(filepath.Join(root, ".env.example")),
		cli.WithDotEnv,
		cli.WithConsistency(true),
		cli.WithResolvedPaths(true),
		cli.WithLoadOptions(func(o *loader.Options) { o.SkipResolveEnvironment = true }),
	)
	if err != nil {
		return nil, err
	}
	project, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, err
	}
	var findings []string
	if err := project.CheckContainerNameUnicity(); err != nil {
		findings = append(findings, err.Error())
	}
	for _, name := range project.ServiceNames() {
		svc := project.Services[name]
		for _, v := range svc.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				findings = append(findings, fmt.Sprintf("service %s mounts %s, which does not exist", name, v.Source))
			}
		}
	}
	// `docker compose up --scale worker=N` needs a worker without a fixed
	// host port or container name.
	if w, ok := project.Services["worker"]; !ok {
		findings = append(findings, "no worker service")
	} else if len(w.Ports) > 0 || w.ContainerName != "" {
		findings = append(findings, "service worker publishes a host port or names its container, so it cannot scale")
	}
	return findings, nil
}
