package logs

import (
	"go.temporal.io/sdk/log"
	"go.uber.org/zap"
)

// Temporal adapts a zap logger to the Temporal SDK's logger, so SDK lines
// share the process's format. The SDK's chatty info lines are kept at debug.
func Temporal(l *zap.Logger) log.Logger {
	return temporalLogger{l.Named("temporal").WithOptions(zap.AddCallerSkip(1)).Sugar()}
}

type temporalLogger struct{ s *zap.SugaredLogger }

func (t temporalLogger) Debug(msg string, keyvals ...any) { t.s.Debugw(msg, keyvals...) }
func (t temporalLogger) Info(msg string, keyvals ...any)  { t.s.Debugw(msg, keyvals...) }
func (t temporalLogger) Warn(msg string, keyvals ...any)  { t.s.Warnw(msg, keyvals...) }
func (t temporalLogger) Error(msg string, keyvals ...any) { t.s.Errorw(msg, keyvals...) }

// With implements log.WithLogger.
func (t temporalLogger) With(keyvals ...any) log.Logger { return temporalLogger{t.s.With(keyvals...)} }
