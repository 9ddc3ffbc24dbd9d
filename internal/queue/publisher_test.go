package queue_test

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/dispatch-engine/dispatch-engine/internal/notification"
	"github.com/dispatch-engine/dispatch-engine/internal/queue"
	"github.com/dispatch-engine/dispatch-engine/internal/testenv"
)

// partitionedBroker is the test broker behind a proxy, and a publisher
// through it with calls bounded by timeout.
func partitionedBroker(t *testing.T, timeout time.Duration) (*queue.Publisher, *testenv.Proxy, queue.Topology) {
	t.Helper()
	u, err := url.Parse(testenv.Shared(t).RabbitMQURL)
	require.NoError(t, err)
	proxy := testenv.NewProxy(t, u.Host)
	u.Host = proxy.Addr()
	topo := testenv.Topology(t)
	pub := queue.NewPublisher(u.String(), topo, queue.WithCallTimeout(timeout))
	t.Cleanup(func() { _ = pub.Close() })
	t.Cleanup(proxy.Heal)
	return pub, proxy, topo
}

func TestPublishToABrokerThatStopsAnsweringEndsInTime(t *testing.T) {
	pub, proxy, topo := partitionedBroker(t, time.Second)
	msg := queue.Outgoing{Exchange: topo.Exchange(), RoutingKey: string(notification.SMS), Body: []byte(`{}`), MessageID: "m-1"}
	require.NoError(t, pub.Publish(context.Background(), msg), "connected and confirmed")

	proxy.Partition()
	start := time.Now()
	err := pub.Publish(context.Background(), msg) // no deadline of the caller's
	require.Error(t, err, "no confirm came")
	require.Less(t, time.Since(start), 3*time.Second, "the publisher's own timeout bounds the wait for confirms")

	proxy.Heal()
	require.Eventually(t, func() bool { return pub.Publish(context.Background(), msg) == nil }, 15*time.Second, 100*time.Millisecond,
		"a fresh connection publishes again")
}

func TestPingOfABrokerThatDoesNotAnswerEndsWithItsContext(t *testing.T) {
	pub, proxy, _ := partitionedBroker(t, 10*time.Second)
	proxy.Partition() // not even the handshake gets through

	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	require.Error(t, pub.Ping(ctx))
	require.Less(t, time.Since(start), 2*time.Second, "a readiness check ends when its context does")
}
