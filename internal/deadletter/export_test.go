package deadletter

// LockKey is the advisory lock, for tests that hold it.
const LockKey = lockKey
