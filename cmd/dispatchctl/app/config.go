package app

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

const (
	defaultURL = "http://127.0.0.1:8080"
	envURL     = "DISPATCH_URL"
	envAPIKey  = "DISPATCH_API_KEY"
	// devKeyFile is where `make run` (scripts/run.sh) keeps the development
	// key, relative to the repository root.
	devKeyFile = ".data/dev-api-key"
)

// config is what a command talks to, and where each part came from.
type config struct {
	url       string
	urlSource string // "--url", "$DISPATCH_URL" or "default"
	apiKey    string
	keySource string // "--api-key", "$DISPATCH_API_KEY", the key file's path, or "" (no key)
}

type flagValue struct {
	value   string
	changed bool
}

// resolveConfig picks the URL and the API key: a flag given on the command
// line wins over the environment, which wins over the key file
// .data/dev-api-key found from dir (the working directory when empty) up to
// the repository root.
func resolveConfig(urlFlag, keyFlag flagValue, env map[string]string, dir string) (config, error) {
	var c config
	switch {
	case urlFlag.changed:
		c.url, c.urlSource = urlFlag.value, "--url"
	case env[envURL] != "":
		c.url, c.urlSource = env[envURL], "$"+envURL
	default:
		c.url, c.urlSource = defaultURL, "default"
	}
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, usageErrorf("the API URL %q (from %s) is not an http:// or https:// URL", c.url, c.urlSource)
	}
	c.url = strings.TrimRight(c.url, "/")

	switch {
	case keyFlag.changed:
		c.apiKey, c.keySource = keyFlag.value, "--api-key"
		if c.apiKey == "" {
			c.keySource = ""
		}
	case env[envAPIKey] != "":
		c.apiKey, c.keySource = env[envAPIKey], "$"+envAPIKey
	default:
		if dir == "" {
			if dir, err = os.Getwd(); err != nil {
				return c, nil // no key; the API will say 401
			}
		}
		path, key, err := findKeyFile(dir)
		if err != nil {
			return c, usageErr(err)
		}
		c.apiKey, c.keySource = key, path
	}
	return c, nil
}

// findKeyFile looks for .data/dev-api-key in dir and its parents, stopping
// after the repository root (the first directory holding .git) or the
// filesystem root. It returns the file's path and its key, trimmed; an
// empty path when there is none.
func findKeyFile(dir string) (string, string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", "", err
	}
	for {
		path := filepath.Join(dir, filepath.FromSlash(devKeyFile))
		raw, err := os.ReadFile(path)
		switch {
		case err == nil:
			if key := strings.TrimSpace(string(raw)); key != "" {
				return path, key, nil
			}
		case !errors.Is(err, fs.ErrNotExist):
			return "", "", fmt.Errorf("reading the API key: %w", err)
		}
		if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
			return "", "", nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", "", nil
		}
		dir = parent
	}
}
