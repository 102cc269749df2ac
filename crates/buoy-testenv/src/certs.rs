//! The control plane's certificates: one CA that signs the API server's serving certificate,
//! the clients' certificates (an admin in `system:masters`) and the stand-in kubelet's serving
//! certificate, plus the service-account signing key. All ECDSA P-256, PEM.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

use crate::EnvError;

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

pub struct Authority {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn gen(e: rcgen::Error) -> EnvError {
    EnvError::Certs(e.to_string())
}

fn params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(30);
    p
}

impl Authority {
    pub fn new() -> Result<Self, EnvError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
        let mut p = params();
        p.distinguished_name
            .push(DnType::CommonName, "buoy-testenv-ca");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).map_err(gen)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        })
    }

    /// A leaf for `cn` (organisation `org` when given), valid for the names and addresses in
    /// `sans`, as a server, a client or both.
    pub fn leaf(
        &self,
        cn: &str,
        org: Option<&str>,
        sans: &[&str],
        server: bool,
        client: bool,
    ) -> Result<Pair, EnvError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
        let mut p = params();
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            p.distinguished_name.push(DnType::OrganizationName, o);
        }
        for s in sans {
            p.subject_alt_names.push(match s.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*s).try_into().map_err(gen)?),
            });
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if server {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if client {
            p.extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let cert = p.signed_by(&key, &self.issuer).map_err(gen)?;
        Ok(Pair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A bare key pair (the service-account token signer): the private key (PKCS#8 PEM) and its
/// public key (SPKI PEM), which the API server wants in a file of its own.
pub fn signing_key() -> Result<(String, String), EnvError> {
    let k = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen)?;
    Ok((k.serialize_pem(), k.public_key_pem()))
}
