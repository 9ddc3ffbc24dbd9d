package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestApplyQuickReplacesOnlyTheDefaults(t *testing.T) {
	defaults := options{
		N: 2000, CeilingN: 1000, IngestDuration: 10 * time.Second, Batches: 20, BatchSize: 1000,
		Timeout: 10 * time.Minute, Idle: 30, PacedDuration: 30 * time.Second, Concurrency: 32,
	}
	quick := options{
		N: 300, CeilingN: 200, IngestDuration: 3 * time.Second, Batches: 3, BatchSize: 500,
		Timeout: 3 * time.Minute, Idle: 10, PacedDuration: 10 * time.Second, Concurrency: 32,
	}

	t.Run("nothing set: the quick sizes", func(t *testing.T) {
		o := defaults
		o.applyQuick(map[string]bool{"quick": true})
		require.Equal(t, quick, o)
	})
	t.Run("what was set stays", func(t *testing.T) {
		o := defaults
		o.N, o.PacedDuration, o.Idle = 5000, 0, 0
		o.applyQuick(map[string]bool{"quick": true, "n": true, "paced-duration": true, "idle": true})
		want := quick
		want.N, want.PacedDuration, want.Idle = 5000, 0, 0
		require.Equal(t, want, o)
	})
	t.Run("a flag quick mode does not size is left alone", func(t *testing.T) {
		o := defaults
		o.Concurrency = 64
		o.applyQuick(nil)
		require.Equal(t, 64, o.Concurrency)
	})
}
