package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nodeward/nodeward/agent/sender"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// agentMetrics exposes the agent's own health as Prometheus metrics, read
// live at scrape time: what the tracer saw and lost (in the ring buffer and
// in its queue), and the outbox to the collector. Loss is never silent: the
// same counts also travel as loss events.
type agentMetrics struct {
	snd *sender.Sender
	trc *tracing

	events, lost, delivered       *prometheus.Desc
	pending, dropped, acked, conn *prometheus.Desc
	tracingUp                     *prometheus.Desc
}

func newAgentMetrics(snd *sender.Sender, trc *tracing) *agentMetrics {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("nodeward_agent_"+name, help, labels, nil)
	}
	return &agentMetrics{
		snd:       snd,
		trc:       trc,
		events:    d("traced_events_total", "Events the BPF programs tried to emit, by kind.", "kind"),
		lost:      d("traced_events_lost_total", "Traced events lost, by kind and where: ring_buffer (the kernel side was full) or queue (the agent fell behind).", "kind", "where"),
		delivered: d("traced_events_delivered_total", "Traced events decoded and handed on, by kind.", "kind"),
		pending:   d("outbox_pending", "Messages waiting for the collector's ack."),
		dropped:   d("outbox_dropped_events_total", "Events the outbox (memory queue or spool) dropped because it was full."),
		acked:     d("last_acked_sequence", "The highest sequence the collector acked."),
		conn:      d("collector_connected", "1 while a stream to the collector is open."),
		tracingUp: d("tracing_active", "1 while eBPF exec tracing runs."),
	}
}

// Describe implements prometheus.Collector.
func (m *agentMetrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.events, m.lost, m.delivered, m.pending, m.dropped, m.acked, m.conn, m.tracingUp} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *agentMetrics) Collect(ch chan<- prometheus.Metric) {
	acked, pending, dropped := m.snd.Stats()
	ch <- prometheus.MustNewConstMetric(m.pending, prometheus.GaugeValue, float64(pending))
	ch <- prometheus.MustNewConstMetric(m.dropped, prometheus.CounterValue, float64(dropped))
	ch <- prometheus.MustNewConstMetric(m.acked, prometheus.GaugeValue, float64(acked))
	ch <- prometheus.MustNewConstMetric(m.conn, prometheus.GaugeValue, boolValue(m.snd.Connected()))
	c, ok := m.trc.Counts()
	ch <- prometheus.MustNewConstMetric(m.tracingUp, prometheus.GaugeValue, boolValue(ok))
	if !ok {
		return
	}
	for kind, n := range c.Seen {
		ch <- prometheus.MustNewConstMetric(m.events, prometheus.CounterValue, float64(n), kind)
		ch <- prometheus.MustNewConstMetric(m.lost, prometheus.CounterValue, float64(c.RingBufferLost[kind]), kind, "ring_buffer")
		ch <- prometheus.MustNewConstMetric(m.lost, prometheus.CounterValue, float64(c.QueueLost[kind]), kind, "queue")
		ch <- prometheus.MustNewConstMetric(m.delivered, prometheus.CounterValue, float64(c.Delivered[kind]), kind)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// serveMetrics serves /metrics, /healthz (the process answers) and /readyz
// (a stream to the collector is open) on addr until ctx ends.
func serveMetrics(ctx context.Context, log *slog.Logger, addr string, snd *sender.Sender, trc *tracing) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newAgentMetrics(snd, trc), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !snd.Connected() {
			http.Error(w, "not connected to the collector", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--metrics-listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("serving metrics and health", "listen", lis.Addr().String())
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	return nil
}
