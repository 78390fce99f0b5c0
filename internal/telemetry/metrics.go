package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/edgeproxy/edgeproxy/internal/iox"
	"github.com/edgeproxy/edgeproxy/internal/meter"
)

// Metrics is the proxy's registry and the instruments the server updates
// directly. Counters that the data path accumulates itself (the guard's,
// the meter's) are read at scrape time by collectors instead, so a read
// on the data path never touches a Prometheus object.
type Metrics struct {
	Registry *prometheus.Registry

	Accepted          *prometheus.CounterVec
	Active            *prometheus.GaugeVec
	Refused           *prometheus.CounterVec
	Closed            *prometheus.CounterVec
	Timeouts          *prometheus.CounterVec
	Lingering         *prometheus.CounterVec
	ProxyHeaderErrors *prometheus.CounterVec
}

// NewMetrics registers every metric. guard and apps are the shared
// counters flushed by connections.
func NewMetrics(guard *iox.Stats, apps *meter.Apps) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Accepted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ConnectionsAccepted,
			Help: "Connections accepted, by public port."}, []string{"port"}),
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ConnectionsActive,
			Help: "Connections open now, by public port."}, []string{"port"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ConnectionsRefused,
			Help: "Connections refused by admission control, by the limit's scope."}, []string{"scope"}),
		Closed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ConnectionsClosed,
			Help: "Connections closed, by why they ended."}, []string{"reason"}),
		Timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: Timeouts,
			Help: "Connections ended by a deadline, by kind."}, []string{"kind"}),
		Lingering: prometheus.NewCounterVec(prometheus.CounterOpts{Name: LingeringCloses,
			Help: "Lingering closes, by how the drain ended."}, []string{"outcome"}),
		ProxyHeaderErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ProxyHeaderFails,
			Help: "Connections closed for an inbound PROXY header problem, by reason."}, []string{"reason"}),
	}
	r.MustRegister(m.Accepted, m.Active, m.Refused, m.Closed, m.Timeouts, m.Lingering, m.ProxyHeaderErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&guardCollector{stats: guard}, &appCollector{apps: apps})
	return m
}

var (
	guardReadsDesc = prometheus.NewDesc(GuardReads, "Reads made on guarded connection layers.", []string{"layer"}, nil)
	guardZeroDesc  = prometheus.NewDesc(GuardZeroProgressReads,
		"Reads that returned no bytes and no error (spurious wakeups); should stay zero.", []string{"layer"}, nil)
	guardEOFDesc = prometheus.NewDesc(GuardReadsAfterEOF,
		"Reads made again after a terminal error; should stay near zero.", []string{"layer"}, nil)
	guardWritesDesc = prometheus.NewDesc(GuardZeroWrites,
		"Writes that wrote no bytes and returned no error; should stay zero.", []string{"layer"}, nil)
	spinKillsDesc = prometheus.NewDesc(SpinKills,
		"Connections killed by the spin detector, by layer and reason.", []string{"layer", "reason"}, nil)
	bytesInDesc  = prometheus.NewDesc(BytesIn, "Wire bytes received from clients, below TLS.", []string{"app"}, nil)
	bytesOutDesc = prometheus.NewDesc(BytesOut, "Wire bytes sent to clients, below TLS.", []string{"app"}, nil)
)

// guardCollector exports iox.Stats at scrape time.
type guardCollector struct{ stats *iox.Stats }

func (c *guardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{guardReadsDesc, guardZeroDesc, guardEOFDesc, guardWritesDesc, spinKillsDesc} {
		ch <- d
	}
}

func (c *guardCollector) Collect(ch chan<- prometheus.Metric) {
	c.stats.Each(func(layer string, s *iox.LayerStats) {
		ch <- prometheus.MustNewConstMetric(guardReadsDesc, prometheus.CounterValue, float64(s.Reads.Load()), layer)
		ch <- prometheus.MustNewConstMetric(guardZeroDesc, prometheus.CounterValue, float64(s.ZeroProgressReads.Load()), layer)
		ch <- prometheus.MustNewConstMetric(guardEOFDesc, prometheus.CounterValue, float64(s.ReadsAfterEOF.Load()), layer)
		ch <- prometheus.MustNewConstMetric(guardWritesDesc, prometheus.CounterValue, float64(s.ZeroWrites.Load()), layer)
		for _, r := range []iox.KillReason{iox.KillZeroProgress, iox.KillAfterEOF, iox.KillZeroWrites, iox.KillCallRate} {
			ch <- prometheus.MustNewConstMetric(spinKillsDesc, prometheus.CounterValue, float64(s.KillCount(r)), layer, string(r))
		}
	})
}

// appCollector exports meter.Apps at scrape time.
type appCollector struct{ apps *meter.Apps }

func (c *appCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- bytesInDesc
	ch <- bytesOutDesc
}

func (c *appCollector) Collect(ch chan<- prometheus.Metric) {
	for _, app := range c.apps.Names() {
		t := c.apps.Totals(app)
		ch <- prometheus.MustNewConstMetric(bytesInDesc, prometheus.CounterValue, float64(t.In.Load()), app)
		ch <- prometheus.MustNewConstMetric(bytesOutDesc, prometheus.CounterValue, float64(t.Out.Load()), app)
	}
}
