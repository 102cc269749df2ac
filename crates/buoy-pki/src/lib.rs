//! Buoy's certificates (compat §6.6, design "Certificates"): a per-run ECDSA P-256 CA, a server
//! certificate for the advertise host, one client certificate per plugin (plugin name as CN and
//! DNS SAN), client keys as SEC1 `EC PRIVATE KEY` PEM so Go workers can read them, the rustls
//! configs for both ends, and reading the identity a client certificate carries.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use p256::pkcs8::DecodePrivateKey;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("key conversion failed: {0}")]
    Key(String),
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("TLS configuration failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// A certificate directory without the CA an operation needs.
    #[error(
        "no CA in {0} (ca.pem and ca.key.pem); run `buoy certs init {0} --advertise HOST` first"
    )]
    NoCa(String),
    #[error("{0:?} cannot name a plugin's certificate: it must be non-empty, not `.` or `..`, and have no `/`")]
    BadPluginName(String),
    #[error("no certificate for plugin {plugin:?} in {dir}; run `buoy certs plugin {dir} {plugin}` first")]
    NoClient { dir: String, plugin: String },
}

/// How far back `not_before` is set, so a worker whose clock lags a little still accepts.
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Certificates outlive Sonobuoy's 48 h so long runs do not break TLS half-way.
const LEAF_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
const CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// The process-wide crypto provider for every TLS config Buoy builds.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn base_params(validity: Duration) -> CertificateParams {
    let mut p = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + validity;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Buoy");
    dn.push(DnType::OrganizationalUnitName, "Sonobuoy");
    p.distinguished_name = dn;
    p
}

/// A certificate and its key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    /// SEC1 (`EC PRIVATE KEY`) for leaves, PKCS#8 for the CA.
    pub key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A run's certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// OID of the P-256 curve (prime256v1).
const PRIME256V1: sec1::der::asn1::ObjectIdentifier =
    sec1::der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// Re-encodes a P-256 key as SEC1 with the named-curve parameter present: Go's
/// `x509.ParseECPrivateKey` refuses a SEC1 key that does not name its curve.
fn sec1_pem(key: &KeyPair) -> Result<String, PkiError> {
    use sec1::der::EncodePem;
    let sk = p256::SecretKey::from_pkcs8_der(&key.serialize_der())
        .map_err(|e| PkiError::Key(e.to_string()))?;
    let scalar = sk.to_bytes();
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&sk.public_key(), false);
    let doc = sec1::EcPrivateKey {
        private_key: &scalar[..],
        parameters: Some(sec1::EcParameters::NamedCurve(PRIME256V1)),
        public_key: Some(point.as_bytes()),
    };
    doc.to_pem(sec1::LineEnding::LF)
        .map_err(|e| PkiError::Key(e.to_string()))
}

impl Ca {
    /// A fresh CA.
    pub fn generate() -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = base_params(CA_VALIDITY);
        p.distinguished_name.push(DnType::CommonName, "buoy-ca");
        p.subject_alt_names = vec![SanType::DnsName("buoy-ca".try_into()?)];
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(p, key),
        })
    }

    /// A CA loaded from its certificate and PKCS#8 key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            issuer,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The server certificate for `host` (an IP SAN if it parses as an IP, else a DNS SAN).
    /// Extra names are added as SANs too.
    pub fn issue_server(&self, host: &str, extra: &[String]) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = base_params(LEAF_VALIDITY);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        for name in std::iter::once(host).chain(extra.iter().map(String::as_str)) {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(name.try_into()?),
            };
            if !p.subject_alt_names.contains(&san) {
                p.subject_alt_names.push(san);
            }
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: sec1_pem(&key)?,
        })
    }

    /// The client certificate of `plugin`: CN and DNS SAN equal the plugin name.
    pub fn issue_client(&self, plugin: &str) -> Result<Issued, PkiError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut p = base_params(LEAF_VALIDITY);
        p.distinguished_name.push(DnType::CommonName, plugin);
        p.subject_alt_names = vec![SanType::DnsName(plugin.try_into()?)];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: sec1_pem(&key)?,
        })
    }
}

fn certs(what: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let v: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let v = v.map_err(|e| PkiError::Pem {
        what: what.into(),
        reason: e.to_string(),
    })?;
    if v.is_empty() {
        return Err(PkiError::Pem {
            what: what.into(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(v)
}

fn key(what: &str, pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::Pem {
        what: what.into(),
        reason: e.to_string(),
    })
}

fn roots(ca_pem: &str) -> Result<rustls::RootCertStore, PkiError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs("CA certificate", ca_pem)? {
        roots.add(c)?;
    }
    Ok(roots)
}

/// The aggregator's TLS config: presents `[server, CA]` and requires a client certificate
/// issued by the CA. HTTP/1.1 only, which is what workers speak.
pub fn server_config(ca_pem: &str, server: &Issued) -> Result<rustls::ServerConfig, PkiError> {
    let provider = provider();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(ca_pem)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| PkiError::Tls(rustls::Error::General(e.to_string())))?;
    let mut chain = certs("server certificate", &server.cert_pem)?;
    chain.extend(certs("CA certificate", ca_pem)?);
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key("server key", &server.key_pem)?)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A worker's TLS config: trusts only the run CA and presents the plugin's certificate.
/// `key_pem` may be SEC1 or PKCS#8.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<rustls::ClientConfig, PkiError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(
            certs("client certificate", cert_pem)?,
            key("client key", key_pem)?,
        )?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A client config that trusts the CA but presents no certificate (for status readers and tests).
pub fn anonymous_client_config(ca_pem: &str) -> Result<rustls::ClientConfig, PkiError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth())
}

/// The names a client certificate speaks for: its subject CNs and DNS SANs.
pub fn identities(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = x
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                out.push(d.to_string());
            }
        }
    }
    out.dedup();
    out
}

/// File names in a certificate directory (`buoy aggregator --certs DIR`).
pub const CA_CERT_FILE: &str = "ca.pem";
pub const CA_KEY_FILE: &str = "ca.key.pem";
pub const SERVER_CERT_FILE: &str = "server.crt.pem";
pub const SERVER_KEY_FILE: &str = "server.key.pem";

pub fn client_cert_file(plugin: &str) -> String {
    format!("{plugin}.crt.pem")
}
pub fn client_key_file(plugin: &str) -> String {
    format!("{plugin}.key.pem")
}

fn io_err(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn write_file(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&tmp).map_err(|e| io_err(&tmp, e))?;
    f.write_all(contents.as_bytes())
        .map_err(|e| io_err(&tmp, e))?;
    f.sync_all().map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

fn read_opt(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, e)),
    }
}

/// The CA in `dir`, created (and written) if there is none.
fn load_or_create_ca(dir: &Path) -> Result<Ca, PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    if let Some(ca) = load_ca(dir)? {
        return Ok(ca);
    }
    let ca = Ca::generate()?;
    write_file(&dir.join(CA_KEY_FILE), ca.key_pem(), true)?;
    write_file(&dir.join(CA_CERT_FILE), ca.cert_pem(), false)?;
    Ok(ca)
}

fn load_ca(dir: &Path) -> Result<Option<Ca>, PkiError> {
    match (
        read_opt(&dir.join(CA_CERT_FILE))?,
        read_opt(&dir.join(CA_KEY_FILE))?,
    ) {
        (Some(c), Some(k)) => Ok(Some(Ca::from_pem(&c, &k)?)),
        _ => Ok(None),
    }
}

/// `plugin`'s client certificate in `dir` if it is there and the CA signed it, else a new one
/// (written).
fn load_or_issue_client(dir: &Path, ca: &Ca, plugin: &str) -> Result<Issued, PkiError> {
    if plugin.is_empty() || plugin == "." || plugin == ".." || plugin.contains(['/', '\0']) {
        return Err(PkiError::BadPluginName(plugin.to_string()));
    }
    let (cp, kp) = (
        dir.join(client_cert_file(plugin)),
        dir.join(client_key_file(plugin)),
    );
    match (read_opt(&cp)?, read_opt(&kp)?) {
        (Some(c), Some(k)) if client_config(ca.cert_pem(), &c, &k).is_ok() => Ok(Issued {
            cert_pem: c,
            key_pem: k,
        }),
        _ => {
            let i = ca.issue_client(plugin)?;
            write_file(&kp, &i.key_pem, true)?;
            write_file(&cp, &i.cert_pem, false)?;
            Ok(i)
        }
    }
}

/// Whether `cert_pem` was issued by `ca`, is valid for at least another day and names `host`
/// (a DNS name or an IP address) among its subject alternative names.
fn server_reusable(ca: &Ca, cert_pem: &str, host: &str) -> bool {
    let der = |pem: &str| certs("certificate", pem).ok()?.into_iter().next();
    let (Some(leaf), Some(root)) = (der(cert_pem), der(ca.cert_pem())) else {
        return false;
    };
    let (Ok((_, x)), Ok((_, c))) = (
        x509_parser::parse_x509_certificate(leaf.as_ref()),
        x509_parser::parse_x509_certificate(root.as_ref()),
    ) else {
        return false;
    };
    let fresh = x
        .validity()
        .time_to_expiration()
        .is_some_and(|left| left > time::Duration::days(1));
    let ip: Option<std::net::IpAddr> = host.trim_matches(['[', ']']).parse().ok();
    let names_host = x
        .subject_alternative_name()
        .ok()
        .flatten()
        .is_some_and(|san| {
            san.value.general_names.iter().any(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => d.eq_ignore_ascii_case(host),
                x509_parser::extensions::GeneralName::IPAddress(b) => match ip {
                    Some(std::net::IpAddr::V4(v4)) => *b == v4.octets().as_slice(),
                    Some(std::net::IpAddr::V6(v6)) => *b == v6.octets().as_slice(),
                    None => false,
                },
                _ => false,
            })
        });
    x.issuer().as_raw() == c.subject().as_raw() && fresh && names_host
}

/// `buoy certs init`: the CA in `dir` (created if missing) and a new server certificate for
/// `host` and `extra_hosts`, written as `buoy aggregator --certs DIR` reads them.
pub fn init_dir(dir: &Path, host: &str, extra_hosts: &[String]) -> Result<(Ca, Issued), PkiError> {
    let ca = load_or_create_ca(dir)?;
    let server = ca.issue_server(host, extra_hosts)?;
    write_file(&dir.join(SERVER_KEY_FILE), &server.key_pem, true)?;
    write_file(&dir.join(SERVER_CERT_FILE), &server.cert_pem, false)?;
    Ok((ca, server))
}

/// `buoy certs plugin`: a client certificate per plugin, signed by the CA already in `dir`;
/// valid ones already there are kept, so certificates handed out stay good.
pub fn issue_clients(dir: &Path, plugins: &[String]) -> Result<(), PkiError> {
    let ca = load_ca(dir)?.ok_or_else(|| PkiError::NoCa(dir.display().to_string()))?;
    for p in plugins {
        load_or_issue_client(dir, &ca, p)?;
    }
    Ok(())
}

/// `buoy certs env`: the `CA_CERT`, `CLIENT_CERT` and `CLIENT_KEY` a worker for `plugin` needs,
/// as `export NAME='PEM'` lines that a POSIX shell can `eval`.
pub fn worker_env(dir: &Path, plugin: &str) -> Result<String, PkiError> {
    let ca = read_opt(&dir.join(CA_CERT_FILE))?
        .ok_or_else(|| PkiError::NoCa(dir.display().to_string()))?;
    let missing = || PkiError::NoClient {
        dir: dir.display().to_string(),
        plugin: plugin.to_string(),
    };
    let cert = read_opt(&dir.join(client_cert_file(plugin)))?.ok_or_else(missing)?;
    let key = read_opt(&dir.join(client_key_file(plugin)))?.ok_or_else(missing)?;
    // PEM text never holds a single quote, so single quotes need no escaping here.
    let line = |name: &str, pem: &str| format!("export {name}='{}'\n", pem.trim_end());
    Ok([
        line("CA_CERT", &ca),
        line("CLIENT_CERT", &cert),
        line("CLIENT_KEY", &key),
    ]
    .concat())
}

/// Everything a run's mTLS needs, held in memory.
pub struct RunPki {
    pub ca: Ca,
    pub server: Issued,
    pub clients: Vec<(String, Issued)>,
}

impl RunPki {
    /// A fresh CA, a server certificate for `host` and one client certificate per plugin.
    pub fn generate(
        host: &str,
        extra_hosts: &[String],
        plugins: &[String],
    ) -> Result<Self, PkiError> {
        let ca = Ca::generate()?;
        let server = ca.issue_server(host, extra_hosts)?;
        let clients = plugins
            .iter()
            .map(|p| Ok((p.clone(), ca.issue_client(p)?)))
            .collect::<Result<_, PkiError>>()?;
        Ok(Self {
            ca,
            server,
            clients,
        })
    }

    /// Uses the CA in `dir` if there is one (else creates it), issues a new server certificate
    /// for `host`, reuses each plugin's client certificate found there and issues the missing
    /// ones. Writes everything back, keys with mode 0600.
    pub fn load_or_create(
        dir: &Path,
        host: &str,
        extra_hosts: &[String],
        plugins: &[String],
    ) -> Result<Self, PkiError> {
        let ca = load_or_create_ca(dir)?;
        // A server certificate `buoy certs init` wrote may name more hosts than `host`: keep
        // it while it is ours, current and covers `host`, so workers dialling any of them work.
        let kept = match (
            read_opt(&dir.join(SERVER_CERT_FILE))?,
            read_opt(&dir.join(SERVER_KEY_FILE))?,
        ) {
            (Some(c), Some(k))
                if server_reusable(&ca, &c, host)
                    && server_config(
                        ca.cert_pem(),
                        &Issued {
                            cert_pem: c.clone(),
                            key_pem: k.clone(),
                        },
                    )
                    .is_ok() =>
            {
                Some(Issued {
                    cert_pem: c,
                    key_pem: k,
                })
            }
            _ => None,
        };
        let server = match kept {
            Some(s) => s,
            None => {
                let server = ca.issue_server(host, extra_hosts)?;
                write_file(&dir.join(SERVER_KEY_FILE), &server.key_pem, true)?;
                write_file(&dir.join(SERVER_CERT_FILE), &server.cert_pem, false)?;
                server
            }
        };
        let clients = plugins
            .iter()
            .map(|p| Ok((p.clone(), load_or_issue_client(dir, &ca, p)?)))
            .collect::<Result<_, PkiError>>()?;
        Ok(Self {
            ca,
            server,
            clients,
        })
    }

    pub fn client(&self, plugin: &str) -> Option<&Issued> {
        self.clients
            .iter()
            .find(|(p, _)| p == plugin)
            .map(|(_, i)| i)
    }

    pub fn server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        server_config(self.ca.cert_pem(), &self.server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_key_is_sec1_with_named_curve() {
        let ca = Ca::generate().unwrap();
        let c = ca.issue_client("systemd_logs").unwrap();
        assert!(
            c.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"),
            "{}",
            c.key_pem
        );
        // A SEC1 key that Go's x509.ParseECPrivateKey reads must name its curve.
        let der = PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap();
        assert!(matches!(der, PrivateKeyDer::Sec1(_)));
        let bytes = der.secret_der();
        let oid_prime256v1 = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        assert!(bytes
            .windows(oid_prime256v1.len())
            .any(|w| w == oid_prime256v1));
        assert!(client_config(ca.cert_pem(), &c.cert_pem, &c.key_pem).is_ok());
    }

    #[test]
    fn client_identity_is_cn_and_dns_san() {
        let ca = Ca::generate().unwrap();
        let c = ca.issue_client("systemd_logs").unwrap();
        let der = certs("c", &c.cert_pem).unwrap().remove(0);
        assert_eq!(identities(&der), vec!["systemd_logs".to_string()]);
    }

    #[test]
    fn server_cert_carries_ip_or_dns_san() {
        let ca = Ca::generate().unwrap();
        for host in ["127.0.0.1", "[::1]", "aggregator.example"] {
            let s = ca.issue_server(host, &[]).unwrap();
            let der = certs("s", &s.cert_pem).unwrap().remove(0);
            let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
            let san = x.subject_alternative_name().unwrap().unwrap();
            assert_eq!(san.value.general_names.len(), 1, "{host}");
            assert_eq!(
                x.subject().iter_common_name().count(),
                0,
                "server has no CN"
            );
            assert!(
                x.validity().not_before.timestamp()
                    < OffsetDateTime::now_utc().unix_timestamp() - 60
            );
        }
        assert!(server_config(ca.cert_pem(), &ca.issue_server("127.0.0.1", &[]).unwrap()).is_ok());
    }

    #[test]
    fn certificate_dir_is_reused() {
        let dir = std::env::temp_dir().join(format!("buoy-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = RunPki::load_or_create(&dir, "127.0.0.1", &[], &["p".into()]).unwrap();
        let b = RunPki::load_or_create(&dir, "127.0.0.1", &[], &["p".into(), "q".into()]).unwrap();
        assert_eq!(a.ca.cert_pem(), b.ca.cert_pem());
        assert_eq!(
            a.client("p").unwrap().cert_pem,
            b.client("p").unwrap().cert_pem
        );
        assert!(dir.join("q.key.pem").exists());
        // A certificate issued by the reloaded CA verifies against the original CA.
        assert!(client_config(
            a.ca.cert_pem(),
            &b.client("q").unwrap().cert_pem,
            &b.client("q").unwrap().key_pem
        )
        .is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("p.key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_aggregator_keeps_a_server_certificate_that_covers_its_host() {
        let d = tempfile::tempdir().unwrap();
        init_dir(d.path(), "10.0.0.5", &["agg.example".to_string()]).unwrap();
        let written = std::fs::read_to_string(d.path().join(SERVER_CERT_FILE)).unwrap();
        // `--advertise agg.example` is covered: the certificate naming both hosts stays.
        let pki = RunPki::load_or_create(d.path(), "agg.example", &[], &["p".into()]).unwrap();
        assert_eq!(pki.server.cert_pem, written);
        let pki = RunPki::load_or_create(d.path(), "10.0.0.5", &[], &[]).unwrap();
        assert_eq!(pki.server.cert_pem, written);
        // A host it does not name gets a new certificate.
        let pki = RunPki::load_or_create(d.path(), "other.example", &[], &[]).unwrap();
        assert_ne!(pki.server.cert_pem, written);
        // `certs plugin` and `certs env` work on the same directory.
        issue_clients(d.path(), &["node-checks".into()]).unwrap();
        let env = worker_env(d.path(), "node-checks").unwrap();
        assert!(
            env.starts_with("export CA_CERT='-----BEGIN CERTIFICATE-----"),
            "{env}"
        );
        assert!(
            env.contains("export CLIENT_KEY='-----BEGIN EC PRIVATE KEY-----"),
            "{env}"
        );
        assert!(matches!(
            worker_env(d.path(), "nope"),
            Err(PkiError::NoClient { .. })
        ));
        assert!(matches!(
            issue_clients(d.path(), &["a/b".into()]),
            Err(PkiError::BadPluginName(_))
        ));
    }
}
