//! Keyed hashes of client addresses: telemetry can group by client without ever storing an address.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 under a secret key, truncated to 64 bits. Without the key the hash cannot be reversed
/// by enumerating addresses (as a plain hash of the IPv4 space could).
#[derive(Clone)]
pub struct ClientHasher {
    mac: Hmac<Sha256>,
}

impl ClientHasher {
    /// A hasher under `key`.
    pub fn new(key: &[u8]) -> Self {
        Self {
            mac: Hmac::new_from_slice(key).expect("HMAC takes keys of any length"),
        }
    }

    /// The keyed hash of `ip`.
    pub fn hash(&self, ip: IpAddr) -> u64 {
        let mut mac = self.mac.clone();
        match ip {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        let digest = mac.finalize().into_bytes();
        u64::from_be_bytes(digest[..8].try_into().expect("SHA-256 digests are 32 bytes"))
    }
}

impl std::fmt::Debug for ClientHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientHasher(<key>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_under_one_key_different_under_another() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let a = ClientHasher::new(b"key-a");
        assert_eq!(a.hash(ip), a.hash(ip));
        assert_ne!(a.hash(ip), ClientHasher::new(b"key-b").hash(ip));
        assert_ne!(a.hash(ip), a.hash("192.0.2.8".parse().unwrap()));
    }
}
