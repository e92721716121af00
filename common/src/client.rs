//! The HTTP client connector of everything Vigil sends out (reports to a collector, the
//! exposure gate's queries, the collector's webhooks): `https://` verified with the checked
//! [`ClientTls`], plain `http://` otherwise, where TLS is refused so that a redirect or a
//! mistake cannot reach an unverified server.

use crate::tls::{trusting_nobody, ClientTls};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use std::time::Duration;

/// A connector for one server: TLS with `tls` for an `https://` URL, plain HTTP/1.1 without.
/// `tls` must offer no ALPN protocols: the connector sets them itself (it panics otherwise).
pub fn connector(
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    // The HTTP connector refuses https:// URLs unless told that TLS is layered on top.
    http.enforce_http(false);
    match tls {
        Some(tls) => HttpsConnectorBuilder::new()
            .with_tls_config(tls.config.as_ref().clone())
            .https_only()
            .with_server_name_resolver(FixedServerNameResolver::new(tls.server_name.clone()))
            .enable_http1()
            .wrap_connector(http),
        None => HttpsConnectorBuilder::new()
            .with_tls_config(trusting_nobody())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http),
    }
}
