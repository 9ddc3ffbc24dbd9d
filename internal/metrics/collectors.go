package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// scrapeTimeout bounds the queries a scrape runs.
const scrapeTimeout = 2 * time.Second

// OutboxBacklog reports the unpublished outbox rows and the age of the oldest.
type OutboxBacklog func(ctx context.Context) (rows int64, oldestAge time.Duration, err error)

// QueueDepths reports the ready messages of each channel's queue and DLQ.
type QueueDepths func(ctx context.Context) (main, dead map[string]int, err error)

// backlogCollector reads the outbox and broker backlogs at scrape time, so
// the figures are current without a polling loop.
type backlogCollector struct {
	outbox OutboxBacklog
	queues QueueDepths

	outboxRows, outboxAge, queueDepth, dlqDepth, up *prometheus.Desc
}

// RegisterBacklog registers the outbox and queue backlog gauges on m.
func (m *Worker) RegisterBacklog(outbox OutboxBacklog, queues QueueDepths) {
	m.Registry.MustRegister(&backlogCollector{
		outbox: outbox,
		queues: queues,
		outboxRows: prometheus.NewDesc("dispatch_outbox_backlog_rows",
			"Outbox rows not yet published to RabbitMQ.", nil, nil),
		outboxAge: prometheus.NewDesc("dispatch_outbox_oldest_age_seconds",
			"Age of the oldest unpublished outbox row (0 when empty).", nil, nil),
		queueDepth: prometheus.NewDesc("dispatch_queue_messages",
			"Ready messages in a channel's RabbitMQ queue.", []string{"channel"}, nil),
		dlqDepth: prometheus.NewDesc("dispatch_dead_letter_messages",
			"Messages in a channel's dead-letter queue (dlq.<channel>).", []string{"channel"}, nil),
		up: prometheus.NewDesc("dispatch_backlog_scrape_up",
			"Whether the last scrape could read the backlog source (1) or not (0).", []string{"source"}, nil),
	})
}

func (c *backlogCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.outboxRows, c.outboxAge, c.queueDepth, c.dlqDepth, c.up} {
		ch <- d
	}
}

func (c *backlogCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	up := func(source string, err error) {
		v := 1.0
		if err != nil {
			v = 0
		}
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, v, source)
	}
	rows, age, err := c.outbox(ctx)
	up("postgres", err)
	if err == nil {
		ch <- prometheus.MustNewConstMetric(c.outboxRows, prometheus.GaugeValue, float64(rows))
		ch <- prometheus.MustNewConstMetric(c.outboxAge, prometheus.GaugeValue, age.Seconds())
	}
	main, dead, err := c.queues(ctx)
	up("rabbitmq", err)
	if err == nil {
		for channel, n := range main {
			ch <- prometheus.MustNewConstMetric(c.queueDepth, prometheus.GaugeValue, float64(n), channel)
		}
		for channel, n := range dead {
			ch <- prometheus.MustNewConstMetric(c.dlqDepth, prometheus.GaugeValue, float64(n), channel)
		}
	}
}
