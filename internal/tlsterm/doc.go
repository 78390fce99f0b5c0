// Package tlsterm owns TLS termination: loading the configured certificates,
// choosing one by SNI, minting self-signed fallbacks, and building the
// *tls.Config for a handshake.
//
// The server wires it like this, for one connection:
//
//	sni = SNIHost(sni)           // an IP literal sent as SNI names no host
//	store.Lookup(sni)            // configured cert: exact name, then *.parent
//	  └─ nil → selfSigner.Get    // only when tls_options.default_self_signed
//	  └─ nil → ErrNoCertificate  // PT05, handshake refused (unrecognized_name)
//	ServerConfig(cert, alpn, Versions(tls_options.versions))
//
// Everything here is either immutable once built (Store, the returned
// *tls.Config) or internally synchronised (SelfSigner), so a reload builds a
// new Store and swaps it without coordinating with handshakes in flight.
//
// Certificates from an ACME CA are internal/acme's; the server asks it
// between the store and the self-signed fallback. Session tickets are
// Tickets': rotated keys, bound to the name they were issued under.
package tlsterm
