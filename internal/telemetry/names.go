// Package telemetry owns what edgeproxy tells operators about itself:
// every metric name (all in this file), the metric registry, and the
// shared counters the data path flushes into.
package telemetry

// Metric names. Every name the proxy exports is declared here and only
// here, so docs/metrics.md and dashboards have one source. Labels are
// bounded: layer, scope, reason, app and port come from code or config,
// never from clients.
const (
	// Connections.
	ConnectionsAccepted = "edgeproxy_connections_accepted_total" // {port}
	ConnectionsActive   = "edgeproxy_connections_active"         // {port}
	ConnectionsRefused  = "edgeproxy_connections_refused_total"  // {scope}
	ConnectionsClosed   = "edgeproxy_connections_closed_total"   // {reason}
	ConnectionsParked   = "edgeproxy_connections_parked"         // idle HTTP/1.1 connections held without a goroutine

	// Wire bytes per app, counted below TLS.
	BytesIn  = "edgeproxy_app_bytes_in_total"  // {app}
	BytesOut = "edgeproxy_app_bytes_out_total" // {app}

	// Progress guard: the "spurious wakeup" counters of docs/incident.md.
	GuardReads             = "edgeproxy_guard_reads_total"               // {layer}
	GuardZeroProgressReads = "edgeproxy_guard_zero_progress_reads_total" // {layer}
	GuardReadsAfterEOF     = "edgeproxy_guard_reads_after_eof_total"     // {layer}
	GuardZeroWrites        = "edgeproxy_guard_zero_byte_writes_total"    // {layer}
	SpinKills              = "edgeproxy_spin_kills_total"                // {layer, reason}

	// Deadlines and closes.
	Timeouts         = "edgeproxy_timeouts_total"            // {kind}: handshake, idle, half_closed, sniff, proxy_header, max_age, body, response
	LingeringCloses  = "edgeproxy_lingering_closes_total"    // {outcome}: clean, timeout, limit
	ProxyHeaderFails = "edgeproxy_proxy_header_errors_total" // {reason}

	// HTTP/2 connections closed for a flood (h2watch).
	H2Floods = "edgeproxy_h2_floods_total" // {kind}: rst_stream, settings, ping

	// Backhaul between edges and workers (internal/backhaul); peer is a
	// fleet node's name, side is edge (this node dialled) or worker.
	BackhaulConns    = "edgeproxy_backhaul_connections"    // {peer, side}: open now
	BackhaulStreams  = "edgeproxy_backhaul_streams_total"  // {peer, side, result}: raw streams opened: ok, or the error code
	BackhaulRequests = "edgeproxy_backhaul_requests_total" // {peer, result}: HTTP requests relayed to a worker: ok, or the error code
	BackhaulBytes    = "edgeproxy_backhaul_bytes_total"    // {peer, direction}: in, out; wire bytes, below TLS
	BackhaulRefused  = "edgeproxy_backhaul_refused_total"  // connections refused in the handshake (no fleet certificate)

	// Fleet catalog (internal/fleet).
	FleetConnected  = "edgeproxy_fleet_connected"           // 1 while connected to the fleet's NATS
	FleetCatalogAge = "edgeproxy_fleet_catalog_age_seconds" // 0 while connected; else since the connection was lost
	FleetUpdates    = "edgeproxy_fleet_updates_total"       // {bucket, result}: applied, refused

	// TLS.
	TLSHandshakes        = "edgeproxy_tls_handshakes_total"           // {version, outcome}
	TLSHandshakeDuration = "edgeproxy_tls_handshake_duration_seconds" // histogram

	// HTTP.
	HTTPRequests        = "edgeproxy_http_requests_total"           // {app, status}: 2xx..5xx
	HTTPRequestDuration = "edgeproxy_http_request_duration_seconds" // {app} histogram
	HTTPCompressed      = "edgeproxy_http_compressed_total"         // {app, encoding}: responses compressed by the proxy
	HTTPCompressBytes   = "edgeproxy_http_compress_bytes_total"     // {app, direction}: in (from the machine), out (to the client)
	HTTPCompressLimited = "edgeproxy_http_compress_limited_total"   // {app}: sent uncompressed for max_compressed_responses
	HTTPCompressing     = "edgeproxy_http_compressing"              // responses being compressed now

	// Upstream.
	UpstreamConnectDuration = "edgeproxy_upstream_connect_duration_seconds" // {app} histogram
	UpstreamConnectFailures = "edgeproxy_upstream_connect_failures_total"   // {app, code}

	// Errors a client saw or a connection ended with, by code.
	Errors = "edgeproxy_errors_total" // {code}

	// Machines: live load and band per service (app, machine, service are
	// from config).
	MachineLoad = "edgeproxy_machine_load" // {app, service, machine}
	MachineBand = "edgeproxy_machine_band" // {app, service, machine}: 0 under soft, 1 over soft, 2 at hard

	// Health checks: every probe, and each machine's verdict per service
	// (port is the service's internal port).
	HealthChecks   = "edgeproxy_health_checks_total" // {app, check, result}: check tcp or http, result pass or fail
	MachineHealthy = "edgeproxy_machine_healthy"     // {app, machine, port}: 1 healthy, 0 not

	// Machine lifecycle: starts on demand, stops when idle.
	MachineStarts        = "edgeproxy_machine_starts_total"           // {app, result}: ok, failed, timeout
	MachineStartDuration = "edgeproxy_machine_start_duration_seconds" // {app}: asked to routable
	MachineStops         = "edgeproxy_machine_stops_total"            // {app, action, reason, result}
	StartWaits           = "edgeproxy_start_waits_total"              // {app}: requests and connections held for a start
	StartWaiting         = "edgeproxy_start_waiting"                  // {app}: held now

	// Replays and retries of HTTP requests.
	Replays        = "edgeproxy_replays_total"         // {app, outcome}: replayed, fallback, failed, invalid
	RequestRetries = "edgeproxy_request_retries_total" // {app, reason}

	// Regions.
	RegionRTT = "edgeproxy_region_rtt_seconds" // {region}

	// UDP services (internal/udpproxy).
	UDPFlows   = "edgeproxy_udp_flows"         // {app, port}: flows open now
	UDPPackets = "edgeproxy_udp_packets_total" // {app, port, direction}: in (client to machine), out
	UDPBytes   = "edgeproxy_udp_bytes_total"   // {app, port, direction}
	UDPDropped = "edgeproxy_udp_dropped_total" // {app, port, reason}: flow_table_full, no_machine, oversize

	// Certificates.
	Certificates      = "edgeproxy_certificates"               // {source}: file, acme: certificates in hand
	CertificateExpiry = "edgeproxy_certificate_expiry_seconds" // {name, source}: seconds until the certificate serving name expires
	ACMEOrders        = "edgeproxy_acme_orders_total"          // {kind, result}: issue, renew; ok, error

	// Config reloads.
	ConfigReloads = "edgeproxy_config_reloads_total" // {result}: ok, failed

	// CPU tripwire.
	TripwireTrips = "edgeproxy_tripwire_trips_total"

	// Build.
	BuildInfo = "edgeproxy_build_info" // {version, goversion}

	// Admin API.
	AdminUnauthorized = "edgeproxy_admin_unauthorized_total"
)
