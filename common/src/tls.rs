//! TLS for Vigil's listeners and clients, with rustls: certificates and keys read from PEM
//! files with errors that name the file, a listener configuration that a reload swaps while
//! the connections made under the old one go on, and client configurations that verify the
//! peer by default.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

/// The lowest TLS version a listener or client accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3 (the default: what nginx and Envoy accept by default).
    #[default]
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl TlsVersion {
    /// Reads `"1.2"` or `"1.3"`; errors name `key`.
    pub fn parse(key: &str, text: &str) -> Result<TlsVersion, String> {
        match text {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(format!(
                "{key}: expected \"1.2\" or \"1.3\", got {text:?} (older versions are not supported)"
            )),
        }
    }

    /// As configured: `1.2` or `1.3`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "1.2",
            TlsVersion::Tls13 => "1.3",
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static FROM_1_2: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static FROM_1_3: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => &FROM_1_2,
            TlsVersion::Tls13 => &FROM_1_3,
        }
    }
}

/// Whether a listener asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate signed by the configured CA, or the handshake fails.
    Required,
    /// A client may present one; without it the connection is served as any other.
    Optional,
}

impl ClientAuth {
    /// Reads `"required"` or `"optional"`; errors name `key`.
    pub fn parse(key: &str, text: &str) -> Result<ClientAuth, String> {
        match text {
            "required" => Ok(ClientAuth::Required),
            "optional" => Ok(ClientAuth::Optional),
            _ => Err(format!(
                "{key}: expected \"required\" or \"optional\", got {text:?}"
            )),
        }
    }
}

/// Where a TLS listener's certificate and key are, and what it asks of clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// PEM certificate chain, the listener's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The lowest version accepted.
    pub min_version: TlsVersion,
    /// PEM CA certificates that sign client certificates; `None`: clients are not asked for one.
    pub client_ca: Option<PathBuf>,
    /// Whether a client certificate is required when `client_ca` is set.
    pub client_auth: ClientAuth,
    /// `key` of the configuration section, for error messages (`listen.tls`).
    pub section: String,
}

/// A TLS listener's configuration, reloadable: [`TlsListener::reload`] reads the files again
/// and the next handshake uses them, while connections already made keep theirs.
pub struct TlsListener {
    files: ServerTlsFiles,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsListener {
    /// Reads the files and builds the configuration; `alpn` lists the protocols offered, most
    /// preferred first.
    pub fn load(files: ServerTlsFiles, alpn: &[&[u8]]) -> Result<TlsListener, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(&files, &alpn)?;
        Ok(TlsListener {
            files,
            alpn,
            current: RwLock::new(config),
        })
    }

    /// The configuration for the next handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Reads the certificate, key and client CA again; on an error the configuration in force
    /// stays, and the error says which file is wrong.
    pub fn reload(&self) -> Result<(), String> {
        let config = server_config(&self.files, &self.alpn)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// The files this listener reads.
    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }
}

/// The crypto provider: ring, which builds with a C compiler alone.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(files: &ServerTlsFiles, alpn: &[Vec<u8>]) -> Result<Arc<ServerConfig>, String> {
    let section = &files.section;
    let chain = read_certificates(&format!("{section}.cert"), &files.cert)?;
    let key = read_private_key(&format!("{section}.key"), &files.key)?;
    warn_if_expiring(&format!("{section}.cert"), &files.cert, &chain);
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(files.min_version.versions())
        .map_err(|e| format!("{section}.min_version: {e}"))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let key = format!("{section}.client_ca");
            let roots = root_store(&key, path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let verifier = match files.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{key}: {}: {e}", path.display()))?,
            )
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "{section}: the key {} does not fit the certificate {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// Certificates closer than this to their end are warned about at start and on reload.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

/// Says in the log, at start and on each reload, that a listener's certificate has expired or
/// soon will: clients refuse an expired one, and the log is where an operator looks first.
fn warn_if_expiring(key: &str, path: &Path, chain: &[CertificateDer<'_>]) {
    match time_to_expiry(chain) {
        None => tracing::warn!(
            file = %path.display(),
            "{key}: the certificate has expired or its validity cannot be read; clients will refuse it"
        ),
        Some(left) if left < EXPIRY_WARNING => tracing::warn!(
            file = %path.display(),
            days_left = left.as_secs() / 86_400,
            "{key}: the certificate expires soon; replace the file and reload (SIGHUP)"
        ),
        Some(_) => {}
    }
}

/// Reads every certificate of a PEM file; errors name `key` and the file.
pub fn read_certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{key}: {} is not a PEM certificate file: {e}",
                path.display()
            )
        })?;
    if certificates.is_empty() {
        return Err(format!(
            "{key}: {} holds no certificate (expected \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certificates)
}

/// Reads the first private key of a PEM file; errors name `key` and the file.
pub fn read_private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        format!(
            "{key}: {} holds no usable private key (PKCS#8, PKCS#1 or SEC1 in PEM): {e}",
            path.display()
        )
    })
}

fn root_store(key: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(key, path)? {
        roots.add(certificate).map_err(|e| {
            format!(
                "{key}: {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// How a client verifies the server it connects to, and what it presents of itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTlsFiles {
    /// PEM CA certificates to trust; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// A PEM client certificate chain to present, with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's PEM private key.
    pub key: Option<PathBuf>,
    /// `false` accepts any server certificate: for tests only, and warned about at start.
    pub verify: bool,
    /// The lowest version accepted.
    pub min_version: TlsVersion,
    /// `key` of the configuration section, for error messages (`upstream.tls`).
    pub section: String,
}

/// A client configuration from `files`, offering `alpn`.
pub fn client_config(files: &ClientTlsFiles, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let section = &files.section;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(files.min_version.versions())
        .map_err(|e| format!("{section}.min_version: {e}"))?;
    let builder = if files.verify {
        let roots = match &files.ca {
            Some(path) => root_store(&format!("{section}.ca"), path)?,
            None => system_roots(section)?,
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
    };
    let mut config = match (&files.cert, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certificates(&format!("{section}.cert"), cert)?;
            let private = read_private_key(&format!("{section}.key"), key)?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                format!(
                    "{section}: the key {} does not fit the certificate {}: {e}",
                    key.display(),
                    cert.display()
                )
            })?
        }
        (Some(_), None) => return Err(format!("{section}.key: missing (cert is set)")),
        (None, Some(_)) => return Err(format!("{section}.cert: missing (key is set)")),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The operating system's trusted roots (`/etc/ssl/certs` on Debian, or `SSL_CERT_FILE`).
fn system_roots(section: &str) -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), ToString::to_string);
        return Err(format!(
            "{section}: no system CA certificates could be loaded ({why}); name a CA file with {section}.ca"
        ));
    }
    Ok(roots)
}

/// `verify = false`: any certificate is taken, though handshake signatures are still checked
/// so the connection is at least encrypted to whoever holds the key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The subject of a certificate, its attributes in the certificate's order
/// (`CN=client-1, O=Example`), for use as a client's identity; `None` when the certificate
/// cannot be parsed.
pub fn certificate_subject(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// How long until the first certificate of `chain` expires; `None` when it already has or
/// cannot be parsed.
pub fn time_to_expiry(chain: &[CertificateDer<'_>]) -> Option<Duration> {
    let (_, parsed) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    let not_after = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs();
    not_after.checked_sub(now).map(Duration::from_secs)
}

/// A TLS listener's section as a configuration file spells it (`[listen.tls]`): on when
/// `cert` is set.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsSection {
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
    /// `"1.2"` or `"1.3"`.
    pub min_version: String,
    /// PEM CA certificates of client certificates (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// `"required"` or `"optional"`, with `client_ca`.
    pub client_auth: String,
}

impl Default for ServerTlsSection {
    fn default() -> Self {
        ServerTlsSection {
            cert: None,
            key: None,
            min_version: TlsVersion::default().as_str().into(),
            client_ca: None,
            client_auth: "required".into(),
        }
    }
}

impl ServerTlsSection {
    /// The checked settings, paths relative to `base`; `None` when TLS is off. `section` names
    /// the section in errors (`listen.tls`). The files are read once here, so that a bad one
    /// is an error of the configuration rather than of the first handshake.
    pub fn files(&self, section: &str, base: &Path) -> Result<Option<ServerTlsFiles>, String> {
        let (cert, key) = match (&self.cert, &self.key) {
            (None, None) => {
                if self.client_ca.is_some() {
                    return Err(format!(
                        "{section}.client_ca: client certificates need TLS; set {section}.cert and {section}.key"
                    ));
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => (base.join(cert), base.join(key)),
            (Some(_), None) => {
                return Err(format!("{section}.key: missing ({section}.cert is set)"))
            }
            (None, Some(_)) => {
                return Err(format!("{section}.cert: missing ({section}.key is set)"))
            }
        };
        let files = ServerTlsFiles {
            cert,
            key,
            min_version: TlsVersion::parse(&format!("{section}.min_version"), &self.min_version)?,
            client_ca: self.client_ca.as_ref().map(|p| base.join(p)),
            client_auth: ClientAuth::parse(&format!("{section}.client_auth"), &self.client_auth)?,
            section: section.to_string(),
        };
        server_config(&files, &[])?;
        Ok(Some(files))
    }
}

/// How a client checks an `https://` server, as a configuration file spells it
/// (`[upstream.tls]`, `[report.tls]`).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsSection {
    /// PEM CA certificates to trust instead of the system's.
    pub ca: Option<PathBuf>,
    /// The name sent as SNI and checked against the certificate, instead of the URL's host.
    pub server_name: Option<String>,
    /// A PEM client certificate chain to present.
    pub cert: Option<PathBuf>,
    /// Its PEM private key.
    pub key: Option<PathBuf>,
    /// Whether the server's certificate is checked.
    pub verify: bool,
    /// `"1.2"` or `"1.3"`.
    pub min_version: String,
}

impl Default for ClientTlsSection {
    fn default() -> Self {
        ClientTlsSection {
            ca: None,
            server_name: None,
            cert: None,
            key: None,
            verify: true,
            min_version: TlsVersion::default().as_str().into(),
        }
    }
}

/// A client's checked TLS settings and the configuration built from them.
#[derive(Clone)]
pub struct ClientTls {
    /// The name sent as SNI and verified.
    pub server_name: ServerName<'static>,
    /// Whether the server's certificate is verified (`false` is warned about at start).
    pub verify: bool,
    /// The rustls configuration.
    pub config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl ClientTlsSection {
    /// Whether any key of the section is set, for refusing it on a plain `http://` URL.
    pub fn is_set(&self) -> bool {
        let default = ClientTlsSection::default();
        self.ca.is_some()
            || self.server_name.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.verify != default.verify
            || self.min_version != default.min_version
    }

    /// The checked settings for a server at `host`, offering `alpn`; paths relative to `base`,
    /// errors naming `section` (`upstream.tls`).
    pub fn client(
        &self,
        section: &str,
        host: &str,
        base: &Path,
        alpn: &[&[u8]],
    ) -> Result<ClientTls, String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        // A bracketed IPv6 host of a URL is an IP address to rustls.
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(bare.to_string()).map_err(|_| {
            format!("{section}.server_name: {name:?} is neither a DNS name nor an IP address")
        })?;
        let files = ClientTlsFiles {
            ca: self.ca.as_ref().map(|p| base.join(p)),
            cert: self.cert.as_ref().map(|p| base.join(p)),
            key: self.key.as_ref().map(|p| base.join(p)),
            verify: self.verify,
            min_version: TlsVersion::parse(&format!("{section}.min_version"), &self.min_version)?,
            section: section.to_string(),
        };
        Ok(ClientTls {
            server_name,
            verify: self.verify,
            config: client_config(&files, alpn)?,
        })
    }
}

/// A client configuration that trusts no server: for a client that may speak TLS but is
/// configured for plain `http://`, so that a redirect or a mistake can never reach an
/// unverified server.
pub fn trusting_nobody() -> ClientConfig {
    ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TlsVersion::default().versions())
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth()
}
