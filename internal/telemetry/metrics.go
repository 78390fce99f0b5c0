package telemetry

import (
	"sync/atomic"
	"time"

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
	H2Floods          *prometheus.CounterVec
	FleetUpdates      *prometheus.CounterVec

	MachineStarts        *prometheus.CounterVec
	MachineStartDuration *prometheus.HistogramVec
	MachineStops         *prometheus.CounterVec
	StartWaits           *prometheus.CounterVec
	StartWaiting         *prometheus.GaugeVec

	TLSHandshakes           *prometheus.CounterVec
	TLSHandshakeDuration    prometheus.Histogram
	HTTPRequests            *prometheus.CounterVec
	HTTPRequestDuration     *prometheus.HistogramVec
	HTTPCompressed          *prometheus.CounterVec
	HTTPCompressBytes       *prometheus.CounterVec
	HTTPCompressLimited     *prometheus.CounterVec
	UpstreamConnectDuration *prometheus.HistogramVec
	UpstreamConnectFailures *prometheus.CounterVec
	Errors                  *prometheus.CounterVec
	HealthChecks            *prometheus.CounterVec
	MachineHealthy          *prometheus.GaugeVec
	Replays                 *prometheus.CounterVec
	RequestRetries          *prometheus.CounterVec
	RegionRTT               *prometheus.GaugeVec
	TripwireTrips           prometheus.Counter
	ConfigReloads           *prometheus.CounterVec
	ACMEOrders              *prometheus.CounterVec
	AdminUnauthorized       prometheus.Counter
	BuildInfo               *prometheus.GaugeVec

	machines *machineCollector
}

// MachineStat is one machine's load on one service, for the machine
// gauges.
type MachineStat struct {
	App, Service, Machine string
	Load                  int64
	Band                  int
}

// SetFleet registers the fleet connection gauges, read at scrape time.
func (m *Metrics) SetFleet(connected func() bool, age func() time.Duration) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: FleetConnected,
			Help: "1 while this node is connected to the fleet's NATS, else 0."}, func() float64 {
			if connected() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: FleetCatalogAge,
			Help: "How stale this node's copy of the fleet catalog may be: 0 while connected, else the seconds since the connection was lost."},
			func() float64 { return age().Seconds() }))
}

// SetCompressing registers the gauge of responses being compressed,
// read at scrape time.
func (m *Metrics) SetCompressing(n func() int) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: HTTPCompressing,
		Help: "Responses being compressed now, each holding an encoder (bounded by [limits] max_compressed_responses)."},
		func() float64 { return float64(n()) }))
}

// SetParked registers the gauge of parked connections, read at scrape
// time.
func (m *Metrics) SetParked(parked func() int) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ConnectionsParked,
		Help: "Idle HTTP/1.1 keep-alive connections waiting for their next request without a goroutine (parked)."},
		func() float64 { return float64(parked()) }))
}

// Backhaul is the backhaul's instruments (internal/backhaul counts into
// them); its connections and bytes are read at scrape time.
type Backhaul struct {
	Streams  *prometheus.CounterVec
	Requests *prometheus.CounterVec
	Refused  prometheus.Counter
}

// BackhaulStat is the backhaul with one peer node on one side: the
// connections open now and the wire bytes ever moved.
type BackhaulStat struct {
	Peer, Side string
	Conns      int
	In, Out    int64
}

var (
	backhaulConnsDesc = prometheus.NewDesc(BackhaulConns, "Backhaul connections open now, by peer node and side (edge: this node dialled it; worker: the peer did).",
		[]string{"peer", "side"}, nil)
	backhaulBytesDesc = prometheus.NewDesc(BackhaulBytes, "Wire bytes on backhaul connections (below TLS), by peer node, side and direction.",
		[]string{"peer", "side", "direction"}, nil)
)

// NewBackhaul registers the backhaul's instruments; stats lists its
// connections and bytes at scrape time.
func (m *Metrics) NewBackhaul(stats func() []BackhaulStat) *Backhaul {
	b := &Backhaul{
		Streams: prometheus.NewCounterVec(prometheus.CounterOpts{Name: BackhaulStreams,
			Help: "Raw backhaul streams, by peer node, side and result (ok, or the error code)."}, []string{"peer", "side", "result"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: BackhaulRequests,
			Help: "HTTP requests an edge relayed to a worker, by worker and result (ok, or the error code)."}, []string{"peer", "result"}),
		Refused: prometheus.NewCounter(prometheus.CounterOpts{Name: BackhaulRefused,
			Help: "Backhaul connections refused in the TLS handshake: no certificate of the fleet's, or one that names no node."}),
	}
	m.Registry.MustRegister(b.Streams, b.Requests, b.Refused, backhaulCollector(stats))
	return b
}

type backhaulCollector func() []BackhaulStat

func (backhaulCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- backhaulConnsDesc
	ch <- backhaulBytesDesc
}

func (f backhaulCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range f() {
		ch <- prometheus.MustNewConstMetric(backhaulConnsDesc, prometheus.GaugeValue, float64(st.Conns), st.Peer, st.Side)
		ch <- prometheus.MustNewConstMetric(backhaulBytesDesc, prometheus.CounterValue, float64(st.In), st.Peer, st.Side, "in")
		ch <- prometheus.MustNewConstMetric(backhaulBytesDesc, prometheus.CounterValue, float64(st.Out), st.Peer, st.Side, "out")
	}
}

// UDPStat is one public UDP port's counters.
type UDPStat struct {
	App, Port                                      string
	Flows                                          int
	PacketsIn, PacketsOut, BytesIn, BytesOut       int64
	DroppedFull, DroppedNoMachine, DroppedOversize int64
}

var (
	udpFlowsDesc   = prometheus.NewDesc(UDPFlows, "UDP flows open now, by app and public port.", []string{"app", "port"}, nil)
	udpPacketsDesc = prometheus.NewDesc(UDPPackets, "UDP datagrams forwarded, by app, public port and direction (in: client to machine; out: machine to client).",
		[]string{"app", "port", "direction"}, nil)
	udpBytesDesc = prometheus.NewDesc(UDPBytes, "UDP payload bytes forwarded, by app, public port and direction.", []string{"app", "port", "direction"}, nil)
	udpDropDesc  = prometheus.NewDesc(UDPDropped, "UDP datagrams dropped, by app, public port and reason: flow_table_full (max_udp_flows), no_machine (none could take a new flow), oversize (a reply larger than the flow's buffer then; later ones fit).",
		[]string{"app", "port", "reason"}, nil)
)

// SetUDP installs the function that lists the UDP ports at scrape time.
func (m *Metrics) SetUDP(list func() []UDPStat) { m.Registry.MustRegister(udpCollector(list)) }

type udpCollector func() []UDPStat

func (udpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- udpFlowsDesc
	ch <- udpPacketsDesc
	ch <- udpBytesDesc
	ch <- udpDropDesc
}

func (f udpCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range f() {
		ch <- prometheus.MustNewConstMetric(udpFlowsDesc, prometheus.GaugeValue, float64(st.Flows), st.App, st.Port)
		ch <- prometheus.MustNewConstMetric(udpPacketsDesc, prometheus.CounterValue, float64(st.PacketsIn), st.App, st.Port, "in")
		ch <- prometheus.MustNewConstMetric(udpPacketsDesc, prometheus.CounterValue, float64(st.PacketsOut), st.App, st.Port, "out")
		ch <- prometheus.MustNewConstMetric(udpBytesDesc, prometheus.CounterValue, float64(st.BytesIn), st.App, st.Port, "in")
		ch <- prometheus.MustNewConstMetric(udpBytesDesc, prometheus.CounterValue, float64(st.BytesOut), st.App, st.Port, "out")
		ch <- prometheus.MustNewConstMetric(udpDropDesc, prometheus.CounterValue, float64(st.DroppedFull), st.App, st.Port, "flow_table_full")
		ch <- prometheus.MustNewConstMetric(udpDropDesc, prometheus.CounterValue, float64(st.DroppedNoMachine), st.App, st.Port, "no_machine")
		ch <- prometheus.MustNewConstMetric(udpDropDesc, prometheus.CounterValue, float64(st.DroppedOversize), st.App, st.Port, "oversize")
	}
}

// CertStat is one name's certificate: where it came from and when it
// expires.
type CertStat struct {
	Name, Source string
	NotAfter     time.Time
}

var (
	certsDesc = prometheus.NewDesc(Certificates, "Names with a certificate in hand, by source (file: [[certificates]]; acme: obtained from the ACME CA).",
		[]string{"source"}, nil)
	certExpiryDesc = prometheus.NewDesc(CertificateExpiry, "Seconds until the certificate serving a name expires (negative once it has), by name and source.",
		[]string{"name", "source"}, nil)
)

// SetCertificates installs the function that lists the certificates at
// scrape time.
func (m *Metrics) SetCertificates(list func() []CertStat) {
	m.Registry.MustRegister(certCollector(list))
}

type certCollector func() []CertStat

func (certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- certsDesc
	ch <- certExpiryDesc
}

func (f certCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	count := map[string]int{"file": 0, "acme": 0}
	for _, st := range f() {
		count[st.Source]++
		ch <- prometheus.MustNewConstMetric(certExpiryDesc, prometheus.GaugeValue, st.NotAfter.Sub(now).Seconds(), st.Name, st.Source)
	}
	for source, n := range count {
		ch <- prometheus.MustNewConstMetric(certsDesc, prometheus.GaugeValue, float64(n), source)
	}
}

// SetMachines installs the function that lists machine loads at scrape
// time (the server's current runtime).
func (m *Metrics) SetMachines(list func() []MachineStat) { m.machines.list.Store(&list) }

// latencyBuckets suit a proxy: sub-millisecond handshakes on loopback up
// to minute-long streams.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

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
			Help: "Connections ended by a deadline, and requests cut for a stalled client (body, response), by kind."}, []string{"kind"}),
		Lingering: prometheus.NewCounterVec(prometheus.CounterOpts{Name: LingeringCloses,
			Help: "Lingering closes, by how the drain ended."}, []string{"outcome"}),
		ProxyHeaderErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ProxyHeaderFails,
			Help: "Connections closed for an inbound PROXY header problem, by reason."}, []string{"reason"}),
		H2Floods: prometheus.NewCounterVec(prometheus.CounterOpts{Name: H2Floods,
			Help: "HTTP/2 client connections told GOAWAY (ENHANCE_YOUR_CALM) and closed for sending too many frames of a kind per second."}, []string{"kind"}),
		FleetUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{Name: FleetUpdates,
			Help: "Fleet catalog records taken into this node's copy or refused (the previous value of the key stays), by bucket."}, []string{"bucket", "result"}),
		MachineStarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MachineStarts,
			Help: "Machines started (or resumed) because work arrived: ok, failed (the driver or the machine refused) or timeout (not routable within start_timeout)."}, []string{"app", "result"}),
		MachineStartDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: MachineStartDuration,
			Help: "Time from asking a machine's driver to start it to the machine taking work (its port accepting, or its checks passing).", Buckets: latencyBuckets}, []string{"app"}),
		MachineStops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: MachineStops,
			Help: "Machines stopped or suspended by edgeproxy, by action (stop, suspend), reason (idle, removed, shutdown) and result (ok, failed)."}, []string{"app", "action", "reason", "result"}),
		StartWaits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: StartWaits,
			Help: "Requests and connections that waited for a machine to start, because no started machine could take them."}, []string{"app"}),
		StartWaiting: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: StartWaiting,
			Help: "Requests and connections waiting for a machine to start now."}, []string{"app"}),
		TLSHandshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: TLSHandshakes,
			Help: "TLS handshakes with clients, by negotiated version (or none) and outcome."}, []string{"version", "outcome"}),
		TLSHandshakeDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: TLSHandshakeDuration,
			Help: "Time to complete a TLS handshake with a client.", Buckets: latencyBuckets}),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: HTTPRequests,
			Help: "HTTP requests answered, by app and status class."}, []string{"app", "status"}),
		HTTPRequestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: HTTPRequestDuration,
			Help: "Time from request to the end of the response, by app.", Buckets: latencyBuckets}, []string{"app"}),
		HTTPCompressed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: HTTPCompressed,
			Help: "Responses the proxy compressed (http_options.compress), by app and encoding (gzip, br, zstd)."}, []string{"app", "encoding"}),
		HTTPCompressBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: HTTPCompressBytes,
			Help: "Body bytes of compressed responses, by app and direction: in as the machine sent them, out as the client got them."}, []string{"app", "direction"}),
		HTTPCompressLimited: prometheus.NewCounterVec(prometheus.CounterOpts{Name: HTTPCompressLimited,
			Help: "Responses sent uncompressed, though the client and the response qualified, because [limits] max_compressed_responses were being compressed already, by app."}, []string{"app"}),
		UpstreamConnectDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: UpstreamConnectDuration,
			Help: "Time to connect to a machine, by app.", Buckets: latencyBuckets}, []string{"app"}),
		UpstreamConnectFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: UpstreamConnectFailures,
			Help: "Failed connects to machines, by app and error code."}, []string{"app", "code"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: Errors,
			Help: "Errors clients saw or connections ended with, by error code (docs/errors.md)."}, []string{"code"}),
		HealthChecks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: HealthChecks,
			Help: "Health check probes run, by app, kind of check (tcp or http) and result (pass or fail)."}, []string{"app", "check", "result"}),
		MachineHealthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: MachineHealthy,
			Help: "Whether a machine passes its health checks for a service (1) or not (0), by app, machine and the service's internal port; only machines with checks."}, []string{"app", "machine", "port"}),
		Replays: prometheus.NewCounterVec(prometheus.CounterOpts{Name: Replays,
			Help: "fly-replay responses acted on, by app and outcome (replayed, fallback, failed, invalid)."}, []string{"app", "outcome"}),
		RequestRetries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: RequestRetries,
			Help: "HTTP requests sent again to another machine, by app and reason."}, []string{"app", "reason"}),
		RegionRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: RegionRTT,
			Help: "Estimated round-trip time from this edge to a region, as used to rank regions (region_rtt refined by connect times), by region."}, []string{"region"}),
		ConfigReloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ConfigReloads,
			Help: "Config reloads, by result (a failed reload leaves the running config in force)."}, []string{"result"}),
		ACMEOrders: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ACMEOrders,
			Help: "ACME certificate issuances and renewals, by kind (issue, renew) and result (ok, error); a failure is retried with backoff."}, []string{"kind", "result"}),
		TripwireTrips: prometheus.NewCounter(prometheus.CounterOpts{Name: TripwireTrips,
			Help: "Times the CPU tripwire fired (each capture, including one the profiler refused: see the log line)."}),
		AdminUnauthorized: prometheus.NewCounter(prometheus.CounterOpts{Name: AdminUnauthorized,
			Help: "Admin API requests refused for a missing or wrong token."}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: BuildInfo,
			Help: "Always 1; the labels name the running build."}, []string{"version", "goversion"}),
		machines: &machineCollector{},
	}
	r.MustRegister(m.Accepted, m.Active, m.Refused, m.Closed, m.Timeouts, m.Lingering, m.ProxyHeaderErrors, m.H2Floods, m.FleetUpdates,
		m.MachineStarts, m.MachineStartDuration, m.MachineStops, m.StartWaits, m.StartWaiting,
		m.TLSHandshakes, m.TLSHandshakeDuration, m.HTTPRequests, m.HTTPRequestDuration, m.HTTPCompressed, m.HTTPCompressBytes, m.HTTPCompressLimited,
		m.UpstreamConnectDuration, m.UpstreamConnectFailures, m.Errors, m.HealthChecks, m.MachineHealthy, m.Replays, m.RequestRetries, m.RegionRTT, m.ConfigReloads, m.ACMEOrders, m.TripwireTrips, m.AdminUnauthorized, m.BuildInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&guardCollector{stats: guard}, &appCollector{apps: apps}, m.machines)
	return m
}

var (
	machineLoadDesc = prometheus.NewDesc(MachineLoad, "Live load of a machine for a service: connections or requests, per the service's concurrency type.",
		[]string{"app", "service", "machine"}, nil)
	machineBandDesc = prometheus.NewDesc(MachineBand, "Load band of a machine for a service: 0 under soft_limit, 1 at or over it, 2 at hard_limit.",
		[]string{"app", "service", "machine"}, nil)
)

// machineCollector reads machine loads from the current runtime at
// scrape time.
type machineCollector struct {
	list atomic.Pointer[func() []MachineStat]
}

func (c *machineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- machineLoadDesc
	ch <- machineBandDesc
}

func (c *machineCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.list.Load()
	if f == nil {
		return
	}
	for _, ml := range (*f)() {
		ch <- prometheus.MustNewConstMetric(machineLoadDesc, prometheus.GaugeValue, float64(ml.Load), ml.App, ml.Service, ml.Machine)
		ch <- prometheus.MustNewConstMetric(machineBandDesc, prometheus.GaugeValue, float64(ml.Band), ml.App, ml.Service, ml.Machine)
	}
}

// StatusClass groups a status code for the requests counter ("2xx").
func StatusClass(code int) string {
	switch {
	case code >= 100 && code < 600:
		return string(rune('0'+code/100)) + "xx"
	default:
		return "other"
	}
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
