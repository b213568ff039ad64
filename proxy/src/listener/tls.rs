//! TLS termination: the certificates a listener presents (picked by SNI), the client certificates it
//! asks for, and reloading them without dropping a connection. A new set that does not load is
//! refused with the reason, and the set in force keeps serving.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{CertificatePair, ListenerTls};
pub use crate::pem::TlsError;
use crate::pem::{read_certificates, read_private_key};

/// ALPN protocols offered, most preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// A TLS listener's certificates, swapped whole on reload.
pub struct TlsTerminator {
    settings: ListenerTls,
    config: ArcSwap<ServerConfig>,
}

impl TlsTerminator {
    /// Loads every certificate, key and CA file that `settings` names.
    pub fn load(settings: &ListenerTls) -> Result<Self, TlsError> {
        Ok(Self {
            config: ArcSwap::from_pointee(server_config(settings)?),
            settings: settings.clone(),
        })
    }

    /// Reads the files again; on success new handshakes use them (connections already open keep
    /// theirs), on failure nothing changes.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.config.store(Arc::new(server_config(&self.settings)?));
        Ok(())
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.load_full())
    }

    /// How often to look for changed files.
    pub fn watch_interval(&self) -> std::time::Duration {
        self.settings.watch_interval
    }

    /// What the files look like now (size, modification time, inode): when this changes, it is time
    /// to reload. A file that cannot be read shows as missing.
    pub fn fingerprint(&self) -> Vec<Option<(u64, std::time::SystemTime, u64)>> {
        use std::os::unix::fs::MetadataExt;
        let pairs = self.settings.certificates.iter();
        let files = pairs
            .flat_map(|p| [&p.cert, &p.key])
            .chain(self.settings.client_ca.as_ref());
        files
            .map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                Some((meta.len(), meta.modified().ok()?, meta.ino()))
            })
            .collect()
    }
}

fn server_config(settings: &ListenerTls) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = settings
        .certificates
        .iter()
        .map(|pair| certified_key(pair, &provider))
        .collect::<Result<Vec<_>, _>>()?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Rustls {
            context: "TLS versions".into(),
            source,
        })?;
    let builder = match &settings.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certificates(ca)? {
                roots.add(cert).map_err(|source| TlsError::Rustls {
                    context: format!("client CA {}", ca.display()),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Content {
                    path: ca.clone(),
                    reason: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(BySni { certificates }));
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

fn certified_key(pair: &CertificatePair, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = read_certificates(&pair.cert)?;
    let key = read_private_key(&pair.key)?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Rustls {
        context: format!("{} with {}", pair.cert.display(), pair.key.display()),
        source,
    })?;
    Ok(Arc::new(key))
}

/// Picks the first certificate valid for the client's SNI name, else the first of all.
#[derive(Debug)]
struct BySni {
    certificates: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello
            .server_name()
            .and_then(|name| ServerName::try_from(name).ok())
            .and_then(|name| self.certificates.iter().find(|c| covers(c, &name)));
        by_name.or_else(|| self.certificates.first()).cloned()
    }
}

/// Whether `certificate`'s leaf names `name` (wildcards included).
fn covers(certificate: &CertifiedKey, name: &ServerName<'_>) -> bool {
    certificate
        .end_entity_cert()
        .ok()
        .and_then(|leaf| webpki::EndEntityCert::try_from(leaf).ok())
        .is_some_and(|leaf| leaf.verify_is_valid_for_subject_name(name).is_ok())
}
