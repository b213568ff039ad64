//! Reading certificates and keys from PEM files, for the listeners' TLS and the pools' HTTPS: size
//! capped, and with errors that name the file and what is wrong with it.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The largest PEM file read: a chain of a few certificates, or a CA bundle, is well under this.
const MAX_PEM_BYTES: usize = 1024 * 1024;

/// Why certificates or keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file was read but holds nothing usable.
    #[error("{path}: {reason}")]
    Content {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate and its key do not belong together, or rustls refused the set.
    #[error("{context}: {source}")]
    Rustls {
        /// Which files.
        context: String,
        /// rustls's reason.
        source: rustls::Error,
    },
}

/// Every certificate in the PEM file at `path`; at least one.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Content {
            path: path.to_owned(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certificates.is_empty() {
        return Err(TlsError::Content {
            path: path.to_owned(),
            reason: "no `BEGIN CERTIFICATE` block".into(),
        });
    }
    Ok(certificates)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) in the PEM file at `path`.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        path: path.to_owned(),
        reason: format!("no private key: {e}"),
    })
}

/// The bytes of the file at `path`, refusing one larger than any PEM file should be.
pub fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |reason: String| TlsError::Read {
        path: path.to_owned(),
        reason,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| read_error(e.to_string()))?
        .len();
    if size > MAX_PEM_BYTES as u64 {
        return Err(read_error(format!(
            "{size} bytes is more than a PEM file of {MAX_PEM_BYTES}"
        )));
    }
    std::fs::read(path).map_err(|e| read_error(e.to_string()))
}
