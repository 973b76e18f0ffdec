//! TLS configurations for servers ([`ServerTls`]) and clients ([`ClientTls`]): from PEM files
//! or from rustls configurations directly.
//!
//! Every configuration uses rustls's `ring` crypto provider with its safe defaults: TLS 1.3
//! and 1.2; cipher suites TLS13_AES_256_GCM_SHA384, TLS13_AES_128_GCM_SHA256,
//! TLS13_CHACHA20_POLY1305_SHA256 (in that order of preference) and, for TLS 1.2,
//! `TLS_ECDHE_{ECDSA,RSA}_WITH_{AES_256_GCM_SHA384,AES_128_GCM_SHA256,CHACHA20_POLY1305_SHA256}`;
//! key exchange X25519, then secp256r1 and secp384r1 (see
//! [`default_provider`]). Nothing older (no CBC, no RSA key exchange, no TLS 1.1). To narrow
//! them, build a rustls configuration with your own provider and use [`ServerTls::new`] /
//! [`ClientTls::new`].
//!
//! Clients trust the Mozilla root program's certificates as bundled by the `webpki-roots`
//! crate, unless given roots of their own: the same roots on every machine, in a container
//! with no CA bundle, and no file-system reads at start-up; the price is that a root added to
//! the system's store (a company CA) must be given explicitly
//! ([`ClientTlsBuilder::root_pem_file`]).

use std::fmt;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ResolvesServerCertUsingSni, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::ConfigError;

/// How long a handshake may take by default before the connection is closed.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The crypto provider every configuration of this crate is built with: rustls's `ring`
/// provider, with its default cipher suites and key-exchange groups.
pub fn default_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (a chain: leaf first).
///
/// # Errors
/// [`ConfigError::Io`], [`ConfigError::BadPem`], or [`ConfigError::NoCertificates`].
pub fn certificates_from_pem_file(
    path: impl AsRef<Path>,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| ConfigError::Io(path.into(), e))?;
    certificates_from_pem(&data, &path.display().to_string())
}

/// Reads every certificate of PEM text (`what` names it in errors).
///
/// # Errors
/// [`ConfigError::BadPem`], or [`ConfigError::NoCertificates`].
pub fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = rustls_pemfile::certs(&mut BufReader::new(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::BadPem(what.into(), e))?;
    if certs.is_empty() {
        return Err(ConfigError::NoCertificates(what.into()));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
///
/// # Errors
/// [`ConfigError::Io`], [`ConfigError::BadPem`], or [`ConfigError::NoPrivateKey`].
pub fn private_key_from_pem_file(
    path: impl AsRef<Path>,
) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| ConfigError::Io(path.into(), e))?;
    private_key_from_pem(&data, &path.display().to_string())
}

/// Reads the first private key of PEM text (`what` names it in errors).
///
/// # Errors
/// [`ConfigError::BadPem`], or [`ConfigError::NoPrivateKey`].
pub fn private_key_from_pem(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    rustls_pemfile::private_key(&mut BufReader::new(pem))
        .map_err(|e| ConfigError::BadPem(what.into(), e))?
        .ok_or_else(|| ConfigError::NoPrivateKey(what.into()))
}

/// The Mozilla roots bundled by `webpki-roots`: what clients trust by default.
pub fn webpki_roots() -> RootCertStore {
    RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned())
}

fn roots_from(certs: Vec<CertificateDer<'static>>) -> Result<RootCertStore, ConfigError> {
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots.add(c)?;
    }
    Ok(roots)
}

// ------------------------------------------------------------------------------------ server

/// What a TLS server uses: a rustls [`ServerConfig`] and a handshake time limit.
///
/// # Examples
/// ```
/// # let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
/// # let (cert_pem, key_pem) = (cert.cert.pem(), cert.key_pair.serialize_pem());
/// use std::time::Duration;
/// use torsion_tls::ServerTls;
///
/// let tls = ServerTls::builder()
///     .certificate_pem(cert_pem.as_bytes(), key_pem.as_bytes())?
///     .alpn(&[b"h2", b"http/1.1"])
///     .handshake_timeout(Some(Duration::from_secs(10)))
///     .build()?;
/// assert_eq!(tls.handshake_timeout(), Some(Duration::from_secs(10)));
/// # Ok::<(), torsion_tls::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ServerTls {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) handshake_timeout: Option<Duration>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("alpn", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From a rustls configuration built by hand (any provider), with the default handshake
    /// timeout.
    pub fn new(config: Arc<ServerConfig>) -> ServerTls {
        ServerTls {
            config,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// A server with one certificate chain and key, from PEM files.
    ///
    /// # Errors
    /// As [`ServerTlsBuilder::certificate_pem_files`] and [`ServerTlsBuilder::build`].
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ServerTls, ConfigError> {
        ServerTls::builder()
            .certificate_pem_files(cert, key)?
            .build()
    }

    /// A builder: certificates (one default, more by SNI name), ALPN, client certificates.
    pub fn builder() -> ServerTlsBuilder {
        ServerTlsBuilder {
            default: None,
            by_name: Vec::new(),
            alpn: Vec::new(),
            client_auth: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }

    /// The same configuration with another handshake time limit (`None`: no limit).
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> ServerTls {
        self.handshake_timeout = timeout;
        self
    }

    /// The handshake time limit.
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

enum ClientAuth {
    Required(RootCertStore),
    Optional(RootCertStore),
}

/// Builds a [`ServerTls`]; see [`ServerTls::builder`].
pub struct ServerTlsBuilder {
    default: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    by_name: Vec<(String, Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: Vec<Vec<u8>>,
    client_auth: Option<ClientAuth>,
    handshake_timeout: Option<Duration>,
}

impl fmt::Debug for ServerTlsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTlsBuilder").finish_non_exhaustive()
    }
}

impl ServerTlsBuilder {
    /// The certificate chain (leaf first) and key served to clients that send no server name
    /// or a name with no certificate of its own.
    pub fn certificate(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.default = Some((chain, key));
        self
    }

    /// As [`certificate`](Self::certificate), from PEM text.
    ///
    /// # Errors
    /// When the PEM holds no certificate or no key.
    pub fn certificate_pem(self, chain: &[u8], key: &[u8]) -> Result<Self, ConfigError> {
        let c = certificates_from_pem(chain, "the certificate PEM")?;
        let k = private_key_from_pem(key, "the key PEM")?;
        Ok(self.certificate(c, k))
    }

    /// As [`certificate`](Self::certificate), from PEM files.
    ///
    /// # Errors
    /// When a file cannot be read or holds no certificate or no key.
    pub fn certificate_pem_files(
        self,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, ConfigError> {
        let c = certificates_from_pem_file(chain)?;
        let k = private_key_from_pem_file(key)?;
        Ok(self.certificate(c, k))
    }

    /// A certificate served to clients that ask for `name` by SNI (several names, several
    /// certificates).
    pub fn sni_certificate(
        mut self,
        name: &str,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.by_name.push((name.to_string(), chain, key));
        self
    }

    /// The application protocols offered, in order of preference (ALPN); the negotiated one is
    /// [`TlsHandle::alpn_protocol`](crate::TlsHandle::alpn_protocol).
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// Clients must present a certificate issued by one of `roots`.
    pub fn client_auth_required(
        mut self,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, ConfigError> {
        self.client_auth = Some(ClientAuth::Required(roots_from(roots)?));
        Ok(self)
    }

    /// Clients may present a certificate; if they do it must be issued by one of `roots`.
    pub fn client_auth_optional(
        mut self,
        roots: Vec<CertificateDer<'static>>,
    ) -> Result<Self, ConfigError> {
        self.client_auth = Some(ClientAuth::Optional(roots_from(roots)?));
        Ok(self)
    }

    /// The handshake time limit (`None`: no limit; default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    /// [`ConfigError::NoServerCertificate`] without any certificate; rustls's refusal of a key
    /// or a name.
    pub fn build(self) -> Result<ServerTls, ConfigError> {
        let provider = default_provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match self.client_auth {
            None => builder.with_no_client_auth(),
            Some(ClientAuth::Required(roots)) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| ConfigError::Verifier(e.to_string()))?,
            ),
            Some(ClientAuth::Optional(roots)) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| ConfigError::Verifier(e.to_string()))?,
            ),
        };
        let load = |chain: Vec<CertificateDer<'static>>,
                    key: PrivateKeyDer<'static>|
         -> Result<CertifiedKey, ConfigError> {
            let signing = provider.key_provider.load_private_key(key)?;
            let ck = CertifiedKey::new(chain, signing);
            // A key that is not the certificate's is refused here, not at the first handshake.
            ck.keys_match()?;
            Ok(ck)
        };
        let mut config = if self.by_name.is_empty() {
            let (chain, key) = self.default.ok_or(ConfigError::NoServerCertificate)?;
            builder.with_single_cert(chain, key)?
        } else {
            let mut sni = ResolvesServerCertUsingSni::new();
            for (name, chain, key) in self.by_name {
                sni.add(&name, load(chain, key)?)?;
            }
            let default = match self.default {
                Some((c, k)) => Some(Arc::new(load(c, k)?)),
                None => None,
            };
            builder.with_cert_resolver(Arc::new(SniResolver { sni, default }))
        };
        config.alpn_protocols = self.alpn;
        Ok(ServerTls {
            config: Arc::new(config),
            handshake_timeout: self.handshake_timeout,
        })
    }
}

/// Certificates by SNI name, with a default for the rest.
#[derive(Debug)]
struct SniResolver {
    sni: ResolvesServerCertUsingSni,
    default: Option<Arc<CertifiedKey>>,
}

impl rustls::server::ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if hello.server_name().is_some() {
            if let Some(k) = self.sni.resolve(hello) {
                return Some(k);
            }
        }
        self.default.clone()
    }
}

// ------------------------------------------------------------------------------------ client

/// What a TLS client uses: a rustls [`ClientConfig`], the name to verify (by default the host
/// connected to) and a handshake time limit.
///
/// Secure by default: [`ClientTls::new_default`] verifies the server's certificate against the
/// bundled Mozilla roots and the host name.
///
/// # Examples
/// ```
/// use torsion_tls::ClientTls;
///
/// let tls = ClientTls::builder().alpn(&[b"h2"]).build()?;
/// assert!(tls.verifies_certificates());
/// # Ok::<(), torsion_tls::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ClientTls {
    pub(crate) config: Arc<ClientConfig>,
    pub(crate) server_name: Option<ServerName<'static>>,
    pub(crate) handshake_timeout: Option<Duration>,
    verifies: bool,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .field("verifies_certificates", &self.verifies)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// From a rustls configuration built by hand (its verifier is the caller's
    /// responsibility).
    pub fn new(config: Arc<ClientConfig>) -> ClientTls {
        ClientTls {
            config,
            server_name: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            verifies: true,
        }
    }

    /// The default client: the bundled Mozilla roots, the host name verified, no ALPN.
    pub fn new_default() -> ClientTls {
        ClientTls::builder()
            .build()
            .expect("the default client configuration is valid")
    }

    /// A builder: roots, ALPN, client certificate, server name, timeout.
    pub fn builder() -> ClientTlsBuilder {
        ClientTlsBuilder {
            roots: None,
            alpn: Vec::new(),
            client_cert: None,
            server_name: None,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
            insecure: false,
        }
    }

    /// The name the server's certificate must be valid for, instead of the host connected to
    /// (also sent by SNI).
    ///
    /// # Errors
    /// [`ConfigError::BadName`] when `name` is neither a DNS name nor an IP address.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls, ConfigError> {
        self.server_name = Some(parse_name(name)?);
        Ok(self)
    }

    /// The same configuration with another handshake time limit (`None`: no limit).
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> ClientTls {
        self.handshake_timeout = timeout;
        self
    }

    /// False only for a configuration built with
    /// [`ClientTlsBuilder::dangerous_disable_certificate_verification`].
    pub fn verifies_certificates(&self) -> bool {
        self.verifies
    }

    /// The rustls configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The server name to verify: the configured one, or else `host`.
    pub(crate) fn name_for(&self, host: &str) -> Result<ServerName<'static>, ConfigError> {
        match &self.server_name {
            Some(n) => Ok(n.clone()),
            None => parse_name(host),
        }
    }
}

fn parse_name(name: &str) -> Result<ServerName<'static>, ConfigError> {
    ServerName::try_from(name.to_string()).map_err(|_| ConfigError::BadName(name.into()))
}

/// Builds a [`ClientTls`]; see [`ClientTls::builder`].
pub struct ClientTlsBuilder {
    roots: Option<RootCertStore>,
    alpn: Vec<Vec<u8>>,
    client_cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    server_name: Option<String>,
    handshake_timeout: Option<Duration>,
    insecure: bool,
}

impl fmt::Debug for ClientTlsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTlsBuilder").finish_non_exhaustive()
    }
}

impl ClientTlsBuilder {
    /// Trusts `cert` as a root (instead of the bundled roots once any is added).
    ///
    /// # Errors
    /// When rustls cannot parse the certificate.
    pub fn root(mut self, cert: CertificateDer<'static>) -> Result<Self, ConfigError> {
        self.roots
            .get_or_insert_with(RootCertStore::empty)
            .add(cert)?;
        Ok(self)
    }

    /// Trusts every certificate of a PEM file as a root.
    ///
    /// # Errors
    /// When the file cannot be read or holds no certificate.
    pub fn root_pem_file(mut self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        for c in certificates_from_pem_file(path)? {
            self = self.root(c)?;
        }
        Ok(self)
    }

    /// Trusts the bundled Mozilla roots too (the default when no root is added).
    pub fn webpki_roots(mut self) -> Self {
        self.roots
            .get_or_insert_with(RootCertStore::empty)
            .extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        self
    }

    /// The application protocols offered, in order of preference (ALPN).
    pub fn alpn(mut self, protocols: &[&[u8]]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_vec()).collect();
        self
    }

    /// The certificate chain and key presented when the server asks for one.
    pub fn client_certificate(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Self {
        self.client_cert = Some((chain, key));
        self
    }

    /// The name the server's certificate must be valid for (default: the host connected to).
    pub fn server_name(mut self, name: &str) -> Self {
        self.server_name = Some(name.to_string());
        self
    }

    /// The handshake time limit (`None`: no limit; default [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Accepts ANY server certificate for ANY name: anyone on the path can read and change
    /// the traffic. For tests against throw-away certificates only; every connection made
    /// with it logs a warning.
    pub fn dangerous_disable_certificate_verification(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// The configuration.
    ///
    /// # Errors
    /// rustls's refusal of the client key; [`ConfigError::BadName`] for a bad server name.
    pub fn build(self) -> Result<ClientTls, ConfigError> {
        let provider = default_provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = if self.insecure {
            tracing::warn!("TLS client configuration built WITHOUT certificate verification");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(self.roots.unwrap_or_else(webpki_roots))
        };
        let mut config = match self.client_cert {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: self.server_name.as_deref().map(parse_name).transpose()?,
            handshake_timeout: self.handshake_timeout,
            verifies: !self.insecure,
        })
    }
}

/// Accepts any certificate (signatures are still checked, so the handshake is sound).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        tracing::warn!(server = ?name, "TLS: server certificate NOT verified (verification disabled)");
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
