// Package config owns edgeproxy's configuration file: its schema, its
// defaults, how it is read (including apps described by a real fly.toml)
// and how it is validated. A loaded Config is immutable; a reload loads a
// new one. Every problem found is reported with file, line and key path so
// that `edgeproxy validate` and a failed reload say exactly where to look.
package config

import "time"

// Config is the whole edgeproxy configuration file.
type Config struct {
	Proxy         Proxy         `toml:"proxy"`
	Limits        Limits        `toml:"limits"`
	ProxyProtocol ProxyProtocol `toml:"proxy_protocol"`
	Guard         Guard         `toml:"guard"`
	Admin         Admin         `toml:"admin"`
	Log           Log           `toml:"log"`
	Tracing       Tracing       `toml:"tracing"`
	Tripwire      Tripwire      `toml:"tripwire"`
	Certificates  []Certificate `toml:"certificates"`
	// ACME, when present, obtains and renews certificates for the apps'
	// hostnames that no [[certificates]] file covers.
	ACME *ACME `toml:"acme"`
	Apps []App `toml:"apps"`
	// Fleet, when present, joins this node to a fleet whose apps and
	// machines come from a shared catalog on NATS JetStream, added to
	// the apps of this file.
	Fleet *Fleet `toml:"fleet"`

	// File is the path the config was read from; relative paths inside the
	// file (certificates, fly_toml) are resolved against its directory.
	File string `toml:"-"`

	pos *positions
}

// Line returns the line of a key path in the config file (0 if unknown),
// for problems found after loading, such as unreadable certificates.
func (c *Config) Line(key string) int {
	if c.pos == nil {
		return 0
	}
	return c.pos.line(key)
}

// Proxy holds settings of this edge.
type Proxy struct {
	// Region is this edge's region code, sent to machines as Fly-Region.
	Region string `toml:"region"`
	// Bind is the address public ports listen on.
	Bind string `toml:"bind"`
	// PortMap remaps public ports to other local ports, for running the
	// quick start without privileges: { 80 = 18080 }.
	PortMap map[string]int `toml:"port_map"`
	// ConnectTimeout bounds one TCP connect to a machine.
	ConnectTimeout Duration `toml:"connect_timeout"`
	// UpstreamBind is the local address connections to machines (and
	// their health checks) come from; empty: the system's choice.
	UpstreamBind string `toml:"upstream_bind"`
	// ConnectAttempts bounds how many machines a request or connection is
	// tried on when connects fail.
	ConnectAttempts int `toml:"connect_attempts"`
	// AutostopInterval is how often each app's idle machines are looked
	// for, per region; a machine stopped within one interval is started
	// again only when no other can be.
	AutostopInterval Duration `toml:"autostop_interval"`
	// QueueTimeout is how long work waits for a machine under its hard
	// limit before the client gets a 503.
	QueueTimeout Duration `toml:"queue_timeout"`
	// HandshakeTimeout bounds the TLS handshake and the wait for the first
	// request bytes.
	HandshakeTimeout Duration `toml:"handshake_timeout"`
	// SessionTicketRotation is how often a new key starts encrypting TLS
	// session tickets; SessionTicketLifetime how long a ticket resumes.
	// A key is forgotten once its last ticket expires, which bounds how
	// long a recorded session stays decryptable with a stolen key.
	SessionTicketRotation Duration `toml:"session_ticket_rotation"`
	// UDPIdleTimeout ends a UDP flow with no datagram either way for
	// that long.
	UDPIdleTimeout        Duration `toml:"udp_idle_timeout"`
	SessionTicketLifetime Duration `toml:"session_ticket_lifetime"`
	// IdleTimeout closes raw TCP connections with no traffic either way
	// and HTTP keep-alive connections with no request.
	IdleTimeout Duration `toml:"idle_timeout"`
	// ResponseHeaderTimeout bounds the wait for a machine's response
	// headers after the request was sent.
	ResponseHeaderTimeout Duration `toml:"response_header_timeout"`
	// MaxHeaderBytes caps a client request's header block.
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// HalfClosedTimeout ends a raw TCP connection this long after either
	// side ended its stream while the other keeps it open (HAProxy's
	// client-fin and server-fin).
	HalfClosedTimeout Duration `toml:"half_closed_timeout"`
	// Splice moves raw TCP bytes with splice(2) where no layer needs to
	// see them. Off by default: measured on loopback with request and
	// response traffic it costs more CPU per byte than the copy loop.
	Splice bool `toml:"splice"`
	// LingeringTimeout bounds how long a closing client connection is
	// drained so that unread bytes do not turn the close into a reset that
	// destroys the tail of a response.
	LingeringTimeout Duration `toml:"lingering_timeout"`
	// LingeringMaxBytes caps what a lingering close reads and discards.
	LingeringMaxBytes int `toml:"lingering_max_bytes"`
	// MaxConnectionAge is the absolute cap on one connection's life.
	MaxConnectionAge Duration `toml:"max_connection_age"`
	// SniffMaxBytes caps the bytes read to detect the protocol.
	SniffMaxBytes int `toml:"sniff_max_bytes"`
	// BodyTimeout and BodyMinBytes bound how slowly a request body may
	// arrive and a response be taken by the client: within every
	// BodyTimeout at least BodyMinBytes must move, or the request is cut
	// and its machine connection released (nginx's client_body_timeout
	// and send_timeout, with a floor on the bytes so a trickle of one
	// byte at a time does not count as progress).
	BodyTimeout  Duration `toml:"body_timeout"`
	BodyMinBytes int      `toml:"body_min_bytes"`
	// CompressMinSize is the smallest response body, in bytes, that
	// http_options.compress compresses: below it the encoding's header
	// and the CPU cost more than the bytes saved. A streamed response,
	// whose length is not known, is always compressed.
	CompressMinSize int `toml:"compress_min_size"`
	// H2MaxConcurrentStreams bounds the requests one HTTP/2 connection
	// may have open at once, and with them the machine connections it
	// holds.
	H2MaxConcurrentStreams int `toml:"h2_max_concurrent_streams"`
	// H2MaxResetsPerSecond, H2MaxSettingsPerSecond and
	// H2MaxPingsPerSecond bound the frames of each kind one HTTP/2
	// connection may send per second; past one, it is told GOAWAY
	// (ENHANCE_YOUR_CALM) and closed. Negative: no limit.
	H2MaxResetsPerSecond   int `toml:"h2_max_resets_per_second"`
	H2MaxSettingsPerSecond int `toml:"h2_max_settings_per_second"`
	H2MaxPingsPerSecond    int `toml:"h2_max_pings_per_second"`
	// DrainTimeout bounds how long a stopping or upgraded proxy lets
	// in-flight requests and connections finish.
	DrainTimeout Duration `toml:"drain_timeout"`
	// WatchConfig reloads the config when its file changes.
	WatchConfig bool `toml:"watch_config"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `toml:"log_level"`
	// RegionRTT is the starting estimate of the round-trip time from this
	// edge to each region; connect times to machines refine it.
	RegionRTT map[string]Duration `toml:"region_rtt"`
	// RegionRTTFixed pins the round-trip time of regions: measurements
	// never change these.
	RegionRTTFixed map[string]Duration `toml:"region_rtt_fixed"`
}

// Limits is admission control: connections beyond a limit are refused at
// once and counted by scope. 0 means unlimited.
type Limits struct {
	MaxConnections        int     `toml:"max_connections"`
	MaxConnectionsPerApp  int     `toml:"max_connections_per_app"`
	MaxConnectionsPerPort int     `toml:"max_connections_per_port"`
	MaxConnectionsPerIP   int     `toml:"max_connections_per_ip"`
	IPAcceptRate          float64 `toml:"ip_accept_rate"`
	IPAcceptBurst         int     `toml:"ip_accept_burst"`
	// MaxUDPFlows bounds the flows of one public UDP port; a datagram
	// that would open one more is dropped and counted.
	MaxUDPFlows int `toml:"max_udp_flows"`
	// MaxCompressedResponses bounds the responses being compressed at
	// once (http_options.compress): each holds an encoder of 0.5 to 1 MiB
	// for as long as it lasts, a server-sent-events stream for its whole
	// life. Past it, responses go uncompressed. Negative: no bound.
	MaxCompressedResponses int `toml:"max_compressed_responses"`
}

// ProxyProtocol is the inbound PROXY protocol: a load balancer in front of
// edgeproxy tells it the real client address.
type ProxyProtocol struct {
	// Mode is off (never read a header), optional (read one when a trusted
	// source sends it) or required (trusted sources must send one).
	Mode string `toml:"mode"`
	// Trusted lists the CIDRs allowed to send headers; a header from any
	// other source closes the connection.
	Trusted []string `toml:"trusted"`
	// Timeout bounds reading the header.
	Timeout Duration `toml:"timeout"`
}

// Guard tunes the spin detector of docs/incident.md.
type Guard struct {
	// ZeroProgressReads kills a connection after this many consecutive
	// reads that returned no bytes and no error.
	ZeroProgressReads int `toml:"zero_progress_reads"`
	// ReadsAfterEOF kills a connection read this many times after a
	// terminal error.
	ReadsAfterEOF int `toml:"reads_after_eof"`
	// MaxCallsPerSecond kills a connection making more calls than this per
	// second without moving a byte, sustained for a second.
	MaxCallsPerSecond int `toml:"max_calls_per_second"`
}

// Log is where the access log goes (the process log level is
// proxy.log_level).
type Log struct {
	// AccessLog is "stdout", "stderr", "off" or a file path: one JSON line
	// per HTTP request and per TCP connection.
	AccessLog string `toml:"access_log"`
}

// Tracing is OpenTelemetry tracing, exported with OTLP over HTTP.
type Tracing struct {
	Enabled bool `toml:"enabled"`
	// Endpoint is the OTLP/HTTP collector URL, e.g. http://127.0.0.1:4318.
	Endpoint string `toml:"endpoint"`
	// SampleRatio is the share of new traces recorded (0 to 1); traces
	// continued from a client follow the client's sampling decision.
	SampleRatio float64 `toml:"sample_ratio"`
	// ServiceName is the service.name resource attribute.
	ServiceName string `toml:"service_name"`
}

// Tripwire captures a CPU profile and a goroutine dump when the process
// burns CPU for several seconds in a row (docs/incident.md).
type Tripwire struct {
	// Enabled is true unless set to false.
	Enabled *bool `toml:"enabled"`
	// Threshold is the CPU use that trips it, as a share of GOMAXPROCS.
	Threshold float64 `toml:"threshold"`
	// Samples is how many consecutive one-second samples must exceed it.
	Samples int `toml:"samples"`
	// ProfileDuration is the length of the CPU profile captured.
	ProfileDuration Duration `toml:"profile_duration"`
	// Dir is where profiles are written; MaxFiles caps how many are kept.
	Dir      string `toml:"dir"`
	MaxFiles int    `toml:"max_files"`
	// Cooldown is the least time between two captures.
	Cooldown Duration `toml:"cooldown"`
}

// TripwireEnabled reports whether the tripwire runs (default true).
func (t Tripwire) TripwireEnabled() bool { return t.Enabled == nil || *t.Enabled }

// Admin is the local admin listener (metrics, profiles).
type Admin struct {
	// Listen is the admin address; "off" disables it.
	Listen string `toml:"listen"`
	// Token is the bearer token; TokenFile reads it from a file.
	Token     string `toml:"token"`
	TokenFile string `toml:"token_file"`
}

// ACME is the [acme] table: certificates from an ACME CA.
type ACME struct {
	// Email is the account's contact address (the CA's expiry notices).
	Email string `toml:"email"`
	// Directory is the CA's ACME directory URL.
	Directory string `toml:"directory"`
	// TrustedRootsFile adds PEM roots to trust for the CA's own HTTPS
	// (a private CA, a test CA).
	TrustedRootsFile string `toml:"trusted_roots_file"`
	// Challenges are the challenge types to use, of "tls-alpn-01" and
	// "http-01".
	Challenges []string `toml:"challenges"`
	// StorageDir holds the account, keys and certificates; relative to
	// the config file. With a [fleet], the fleet's NATS holds them.
	StorageDir string `toml:"storage_dir"`
	// RenewCheckInterval is how often certificates are checked for
	// renewal (and OCSP staples refreshed).
	RenewCheckInterval Duration `toml:"renew_check_interval"`
}

// Certificate is one [[certificates]] entry.
type Certificate struct {
	CertFile  string   `toml:"cert_file"`
	KeyFile   string   `toml:"key_file"`
	Hostnames []string `toml:"hostnames"`
}

// App is one [[apps]] entry: its names, services and machines.
type App struct {
	Name      string   `toml:"name"`
	Hostnames []string `toml:"hostnames"`
	// FlyToml names a fly.toml whose app, [[services]] and [http_service]
	// are read unchanged instead of writing them here.
	FlyToml     string       `toml:"fly_toml"`
	Services    []Service    `toml:"services"`
	HTTPService *HTTPService `toml:"http_service"`
	Machines    []Machine    `toml:"machines"`
	// PrimaryRegion is where min_machines_running counts machines
	// (default: the proxy's region).
	PrimaryRegion string `toml:"primary_region"`
	// KillSignal and KillTimeout stop a machine: the signal, then a kill
	// once the timeout has passed.
	KillSignal  string   `toml:"kill_signal"`
	KillTimeout Duration `toml:"kill_timeout"`
	// Driver starts, stops and suspends the app's machines. Without one,
	// their state is as written and nothing starts or stops them.
	Driver *Driver `toml:"driver"`

	// fromFlyToml records, for diagnostics, where services came from.
	fromFlyToml   string
	flyTomlFailed bool
}

// Service is a fly.toml [[services]] section.
type Service struct {
	InternalPort int          `toml:"internal_port"`
	Protocol     string       `toml:"protocol"`
	Ports        []Port       `toml:"ports"`
	Concurrency  *Concurrency `toml:"concurrency"`
	// Balance is the balancing policy: least-loaded (the platform's) or
	// p2c-latency (an edgeproxy extension).
	Balance    string      `toml:"balance"`
	TCPChecks  []TCPCheck  `toml:"tcp_checks"`
	HTTPChecks []HTTPCheck `toml:"http_checks"`

	// Accepted because real fly.toml files carry them; machine lifecycle
	// is not acted on yet, which validate reports.
	Processes          []string `toml:"processes"`
	AutoStopMachines   any      `toml:"auto_stop_machines"`
	AutoStartMachines  *bool    `toml:"auto_start_machines"`
	MinMachinesRunning *int     `toml:"min_machines_running"`
}

// TCPCheck is fly.toml's [[services.tcp_checks]]: the machine's internal
// port must accept a connection.
type TCPCheck struct {
	// Check timings are durations, or integers of milliseconds as the
	// platform reads them.
	Interval CheckDuration `toml:"interval"`
	Timeout  CheckDuration `toml:"timeout"`
	// GracePeriod is a pointer because "0s" (no grace) differs from
	// unset (the default); Grace reads it.
	GracePeriod *CheckDuration `toml:"grace_period"`
	// UnhealthyAfter and HealthyAfter are how many consecutive failures
	// take a machine out of routing and how many passes bring it back
	// (edgeproxy extensions).
	UnhealthyAfter int `toml:"unhealthy_after"`
	HealthyAfter   int `toml:"healthy_after"`
}

// Grace is the grace period, the default when unset.
func (t TCPCheck) Grace() time.Duration {
	if t.GracePeriod == nil {
		return DefaultCheckGracePeriod
	}
	return t.GracePeriod.D()
}

// HTTPCheck is fly.toml's [[services.http_checks]] and
// [[http_service.checks]]: a request that must answer 2xx.
type HTTPCheck struct {
	TCPCheck
	Method        string            `toml:"method"`
	Path          string            `toml:"path"`
	Protocol      string            `toml:"protocol"`
	TLSSkipVerify bool              `toml:"tls_skip_verify"`
	TLSServerName string            `toml:"tls_server_name"`
	Headers       map[string]string `toml:"headers"`
}

// Port is a fly.toml [[services.ports]] entry.
type Port struct {
	Port       *int     `toml:"port"`
	StartPort  *int     `toml:"start_port"`
	EndPort    *int     `toml:"end_port"`
	Handlers   []string `toml:"handlers"`
	ForceHTTPS bool     `toml:"force_https"`

	TLSOptions        *TLSOptions        `toml:"tls_options"`
	HTTPOptions       *HTTPOptions       `toml:"http_options"`
	ProxyProtoOptions *ProxyProtoOptions `toml:"proxy_proto_options"`
}

// TLSOptions is fly.toml's tls_options.
type TLSOptions struct {
	ALPN              []string `toml:"alpn"`
	Versions          []string `toml:"versions"`
	DefaultSelfSigned bool     `toml:"default_self_signed"`
}

// HTTPOptions is fly.toml's http_options.
type HTTPOptions struct {
	H2Backend bool `toml:"h2_backend"`
	// AbortOnClose cancels a request when its client half-closes; by
	// default a client that ends its stream after a complete request still
	// gets the response (an edgeproxy extension, HAProxy's abortonclose).
	AbortOnClose bool     `toml:"abort_on_close"`
	IdleTimeout  Duration `toml:"idle_timeout"`
	Compress     *bool    `toml:"compress"`
	// DebugRouting adds a response header naming the machine chosen, the
	// candidates and why (an edgeproxy extension).
	DebugRouting bool            `toml:"debug_routing"`
	Response     *ResponseOption `toml:"response"`
}

// ResponseOption is http_options.response: headers to add (a string or a
// list of strings) or remove (false), or pristine to add nothing.
type ResponseOption struct {
	Pristine bool           `toml:"pristine"`
	Headers  map[string]any `toml:"headers"`
}

// ProxyProtoOptions is fly.toml's proxy_proto_options.
type ProxyProtoOptions struct {
	Version string `toml:"version"`
}

// Concurrency is fly.toml's [services.concurrency].
type Concurrency struct {
	Type      string `toml:"type"`
	SoftLimit int    `toml:"soft_limit"`
	HardLimit int    `toml:"hard_limit"`
}

// HTTPService is fly.toml's [http_service] shorthand.
type HTTPService struct {
	InternalPort int          `toml:"internal_port"`
	ForceHTTPS   bool         `toml:"force_https"`
	Concurrency  *Concurrency `toml:"concurrency"`
	HTTPOptions  *HTTPOptions `toml:"http_options"`
	TLSOptions   *TLSOptions  `toml:"tls_options"`
	Balance      string       `toml:"balance"`
	Checks       []HTTPCheck  `toml:"checks"`
	// TCPChecks are tcp checks of the service (fly.toml's top-level
	// [checks] of type "tcp" on its port land here).
	TCPChecks []TCPCheck `toml:"tcp_checks"`

	Processes          []string `toml:"processes"`
	AutoStopMachines   any      `toml:"auto_stop_machines"`
	AutoStartMachines  *bool    `toml:"auto_start_machines"`
	MinMachinesRunning *int     `toml:"min_machines_running"`
	MachineChecks      []any    `toml:"machine_checks"`
}

// Machine is one machine of the built-in file catalog.
type Machine struct {
	ID      string `toml:"id"`
	Region  string `toml:"region"`
	Address string `toml:"address"`
	// Ports maps an internal port to the port the machine really listens
	// on, for machines sharing one host address.
	Ports map[string]int `toml:"ports"`
	State string         `toml:"state"`
	// Cordoned machines get no new requests; those in flight finish.
	Cordoned bool `toml:"cordoned"`
	// ProcessGroup is the fly.toml process group the machine runs: a
	// service with processes = [...] reaches only machines of those
	// groups (default "app", the platform's name for the only group).
	ProcessGroup string `toml:"process_group"`
	// Owner is the fleet node whose driver starts and stops the machine
	// (fleet catalog only; a config file's machines are this node's).
	Owner string `toml:"-" json:"owner,omitempty"`
}

// Driver is an app's [apps.driver]: what starts and stops its machines.
type Driver struct {
	// Type is exec (each machine a local process) or machines-api.
	Type string `toml:"type"`
	// StartTimeout bounds a start: from asking the driver to the machine
	// accepting connections (or passing its checks).
	StartTimeout Duration `toml:"start_timeout"`

	// exec: Command runs each machine, with PORT, FLY_MACHINE_ID,
	// FLY_REGION and FLY_APP_NAME set, in Dir, with Env added; its output
	// goes to LogDir/APP-ID.log.
	Command []string          `toml:"command"`
	Env     map[string]string `toml:"env"`
	Dir     string            `toml:"dir"`
	LogDir  string            `toml:"log_dir"`

	// machines-api: the API at URL, with the bearer token in TokenFile;
	// APIApp is the app's name there (default: this app's name).
	URL            string   `toml:"url"`
	TokenFile      string   `toml:"token_file"`
	APIApp         string   `toml:"api_app"`
	RequestTimeout Duration `toml:"request_timeout"`
	Retries        *int     `toml:"retries"`
}

// Fleet is the [fleet] table: how this node reaches the fleet's NATS
// servers, or runs one itself, and what it is in the fleet.
type Fleet struct {
	// URLs of the fleet's NATS servers. Without them, Embedded runs one
	// in this process.
	URLs     []string `toml:"urls"`
	Embedded bool     `toml:"embedded"`
	// Listen is the embedded server's client address; Cluster* and
	// Routes join embedded servers into a cluster.
	Listen        string   `toml:"listen"`
	ClusterName   string   `toml:"cluster_name"`
	ClusterListen string   `toml:"cluster_listen"`
	Routes        []string `toml:"routes"`
	// DataDir holds the embedded server's JetStream store and the last
	// catalog applied, served from at start while NATS is unreachable.
	DataDir string `toml:"data_dir"`
	// Credentials, from files so that none is written in the config.
	CredsFile    string `toml:"creds_file"`
	UserFile     string `toml:"user_file"`
	PasswordFile string `toml:"password_file"`
	TokenFile    string `toml:"token_file"`
	// TLS to NATS.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// Node is this node's name in the fleet (default: the host name);
	// Role is edge, worker or edge+worker.
	Node string `toml:"node"`
	Role string `toml:"role"`
	// Regions whose machines this edge watches in detail; empty: all.
	Regions []string `toml:"regions"`
	// The backhaul: a worker listens on BackhaulListen and is dialled by
	// edges at BackhaulAdvertise; both ends authenticate with the fleet
	// CA's certificates (re-read on reload, so they can be rotated).
	BackhaulListen    string `toml:"backhaul_listen"`
	BackhaulAdvertise string `toml:"backhaul_advertise"`
	BackhaulCAFile    string `toml:"backhaul_ca_file"`
	BackhaulCertFile  string `toml:"backhaul_cert_file"`
	BackhaulKeyFile   string `toml:"backhaul_key_file"`
}

// Worker reports whether the node runs machines for the fleet.
func (f *Fleet) Worker() bool { return f != nil && (f.Role == "worker" || f.Role == "edge+worker") }

// Edge reports whether the node serves clients.
func (f *Fleet) Edge() bool { return f == nil || f.Role == "edge" || f.Role == "edge+worker" }

// Backhaul reports whether the node takes part in the backhaul: it has
// a fleet certificate.
func (f *Fleet) Backhaul() bool { return f != nil && f.BackhaulCertFile != "" }
