// Package metrics is the collector's Prometheus instrumentation: ingest,
// store, tail and fleet posture, on a registry of its own (no globals).
package metrics

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/nodeward/nodeward/collector/hub"
	"github.com/nodeward/nodeward/collector/store"
	nodewardv1 "github.com/nodeward/nodeward/proto/nodeward/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every collector metric.
type Metrics struct {
	Registry        *prometheus.Registry
	AgentsConnected prometheus.Gauge
	IngestEvents    prometheus.Counter
	IngestMessages  *prometheus.CounterVec
	AckLatency      prometheus.Histogram
	StoreLatency    *prometheus.HistogramVec
	StoreErrors     *prometheus.CounterVec
	NodeLastSeen    *prometheus.GaugeVec
}

// New registers the metrics; h may be nil (no tail metrics), and so may st
// (no fleet metrics).
func New(h *hub.Hub, st store.Store, log *slog.Logger) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		AgentsConnected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nodeward_agents_connected", Help: "Agent streams open on this collector replica.",
		}),
		IngestEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nodeward_ingest_events_total", Help: "Events committed from agents (duplicates not counted).",
		}),
		IngestMessages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeward_ingest_messages_total", Help: "Agent messages handled, by kind and result.",
		}, []string{"kind", "result"}),
		AckLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "nodeward_ingest_ack_latency_seconds", Help: "Time from receiving a sequenced message to sending its ack (commit included).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		StoreLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "nodeward_store_operation_duration_seconds", Help: "Store operation latency, by operation.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op"}),
		StoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodeward_store_errors_total", Help: "Store operations that failed, by operation.",
		}, []string{"op"}),
		NodeLastSeen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nodeward_node_last_seen_timestamp_seconds", Help: "When this replica last heard from each node (Unix time).",
		}, []string{"node"}),
	}
	r.MustRegister(m.AgentsConnected, m.IngestEvents, m.IngestMessages, m.AckLatency, m.StoreLatency, m.StoreErrors, m.NodeLastSeen,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if h != nil {
		r.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nodeward_tail_subscribers", Help: "Live tails open on this replica."},
				func() float64 { return float64(h.Subscribers()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "nodeward_tail_events_published_total", Help: "Events offered to live tails."},
				func() float64 { return float64(h.Published()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "nodeward_tail_events_dropped_total", Help: "Events slow tail subscribers missed (each told with a gap marker)."},
				func() float64 { return float64(h.Dropped()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "nodeward_node_sequence_gaps_total", Help: "Holes seen in nodes' sequence numbers (data lost before the collector)."},
				func() float64 { return float64(h.SequenceGaps()) }),
		)
	}
	if st != nil {
		r.MustRegister(&fleet{st: st, log: log, every: 15 * time.Second})
	}
	return m
}

// fleet exports posture gauges computed from the store, cached so a
// scrape storm does not hammer the store.
type fleet struct {
	st    store.Store
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	at      time.Time
	metrics []prometheus.Metric
}

var (
	descNodes     = prometheus.NewDesc("nodeward_fleet_nodes", "Nodes known to the collector.", nil, nil)
	descConnected = prometheus.NewDesc("nodeward_fleet_nodes_connected", "Nodes with an agent stream open on any replica.", nil, nil)
	descFailing   = prometheus.NewDesc("nodeward_fleet_findings_failing", "Failing findings across the fleet, by severity.", []string{"severity"}, nil)
	descNodesCrit = prometheus.NewDesc("nodeward_fleet_nodes_with_failing", "Nodes with at least one failing finding of this severity.", []string{"severity"}, nil)
	descScore     = prometheus.NewDesc("nodeward_node_posture_score", "Each node's posture score, 0-100 (see PostureSummary).", []string{"node"}, nil)
	descScoreMin  = prometheus.NewDesc("nodeward_fleet_posture_score_min", "The lowest posture score in the fleet.", nil, nil)
	descUnknown   = prometheus.NewDesc("nodeward_fleet_findings_undecided", "Findings that could not be decided, by status (unknown or error).", []string{"status"}, nil)
)

// Describe implements prometheus.Collector.
func (f *fleet) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNodes, descConnected, descFailing, descNodesCrit, descScore, descScoreMin, descUnknown} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (f *fleet) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.at) > f.every || f.metrics == nil {
		ms, err := f.compute()
		if err != nil {
			f.log.Warn("fleet metrics", "err", err)
			ch <- prometheus.NewInvalidMetric(descNodes, err)
			return
		}
		f.metrics, f.at = ms, time.Now()
	}
	for _, m := range f.metrics {
		ch <- m
	}
}

func (f *fleet) compute() ([]prometheus.Metric, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var nodes []*nodewardv1.Node
	token := ""
	for {
		page, next, err := f.st.ListNodes(ctx, store.MaxPageSize, token)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, page...)
		if next == "" {
			break
		}
		token = next
	}
	var connected, unknown, errs float64
	failing := map[string]float64{}
	withFailing := map[string]float64{}
	minScore := 100.0
	var out []prometheus.Metric
	for _, n := range nodes {
		if n.GetConnected() {
			connected++
		}
		p := n.GetPosture()
		for sev, c := range map[string]uint32{"critical": p.GetFailingCritical(), "high": p.GetFailingHigh(), "medium": p.GetFailingMedium(), "low": p.GetFailingLow(), "info": p.GetFailingInfo()} {
			failing[sev] += float64(c)
			if c > 0 {
				withFailing[sev]++
			}
		}
		unknown += float64(p.GetUnknown())
		errs += float64(p.GetErrors())
		if p.GetDecided() > 0 {
			out = append(out, prometheus.MustNewConstMetric(descScore, prometheus.GaugeValue, float64(p.GetScore()), n.GetName()))
			minScore = min(minScore, float64(p.GetScore()))
		}
	}
	out = append(out,
		prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(len(nodes))),
		prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, connected),
		prometheus.MustNewConstMetric(descScoreMin, prometheus.GaugeValue, minScore),
		prometheus.MustNewConstMetric(descUnknown, prometheus.GaugeValue, unknown, "unknown"),
		prometheus.MustNewConstMetric(descUnknown, prometheus.GaugeValue, errs, "error"),
	)
	for _, sev := range []string{"critical", "high", "medium", "low", "info"} {
		out = append(out, prometheus.MustNewConstMetric(descFailing, prometheus.GaugeValue, failing[sev], sev),
			prometheus.MustNewConstMetric(descNodesCrit, prometheus.GaugeValue, withFailing[sev], sev))
	}
	return out, nil
}

// Observe times one store operation.
func (m *Metrics) Observe(op string, start time.Time, err error) {
	if m == nil {
		return
	}
	m.StoreLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		m.StoreErrors.WithLabelValues(op).Inc()
	}
}
