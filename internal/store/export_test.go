package store

// The begin's columns with and without its consent check, for the
// benchmark that compares them (consent_bench_test.go).
var (
	BeginColumnsForTest        = beginColumns
	NotificationColumnsForTest = notificationColumns
)
