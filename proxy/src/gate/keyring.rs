//! The keys file: client keys as SHA-256 digests, each naming its tenant, what it may use and its
//! limits, and the tenants' limits. A key itself is never stored, logged or counted; what names it
//! everywhere is its `id` and its tenant.
//!
//! ```toml
//! [tenants.team-a]
//! limits = { requests_per_minute = 6000, tokens_per_minute = 2000000, concurrent = 50 }
//!
//! [[keys]]
//! id = "team-a-ci"                     # how logs and metrics name this key
//! tenant = "team-a"
//! sha256 = "9f86d081884c7d65..."       # `augur keys hash` prints it
//! routes = ["chat"]                    # optional: the routes it may use (default: all)
//! models = ["llama-3-8b"]              # optional: the models it may ask for (default: all)
//! limits = { requests_per_second = 10, concurrent = 4 }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use prometheus::IntCounter;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::rate::Scope;
use crate::config::Limits;

/// Largest keys file read.
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    tenants: BTreeMap<String, TenantEntry>,
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantEntry {
    #[serde(default)]
    limits: Limits,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    tenant: String,
    sha256: String,
    routes: Option<BTreeSet<String>>,
    models: Option<BTreeSet<String>>,
    #[serde(default)]
    limits: Limits,
}

/// A key as the proxy knows it.
#[derive(Debug)]
pub struct Key {
    /// Its name in logs and metrics.
    pub id: Arc<str>,
    /// Its tenant.
    pub tenant: Arc<Tenant>,
    /// The routes it may use; `None`: all.
    pub routes: Option<BTreeSet<String>>,
    /// The models it may ask for; `None`: all.
    pub models: Option<BTreeSet<String>>,
    /// Its own limits.
    pub scope: Scope,
}

/// A tenant: its name and the limits its keys share.
#[derive(Debug)]
pub struct Tenant {
    /// Its name.
    pub name: Arc<str>,
    /// The limits all its keys count against together.
    pub scope: Scope,
    /// Its count of requests let in, resolved at its first (so a request does no label lookup).
    pub admitted: OnceLock<IntCounter>,
}

/// The keys in force.
#[derive(Debug, Default)]
pub struct Keyring {
    by_digest: HashMap<[u8; 32], Arc<Key>>,
    /// Every tenant of the file, those without keys included (tokens name them).
    tenants: HashMap<String, Arc<Tenant>>,
    /// Keys already matched, by themselves: a request with a key seen before skips the SHA-256.
    /// Only keys of this file get in, so it holds at most as many as the file lists; it goes with
    /// the keyring when the file reloads. Hashed with aHash, keyed at random like the standard
    /// library's SipHash (a client cannot aim a key at a bucket), in about 50 instructions a
    /// lookup where SipHash took 235 (callgrind, `bench/instructions.sh`).
    matched: RwLock<HashMap<Box<[u8]>, Arc<Key>, ahash::RandomState>>,
}

impl Keyring {
    /// The key whose SHA-256 is that of `presented`, if any.
    pub fn find(&self, presented: &[u8]) -> Option<Arc<Key>> {
        let matched = |ring: &Self| {
            ring.matched
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(presented)
                .cloned()
        };
        if let Some(key) = matched(self) {
            return Some(key);
        }
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let key = self.by_digest.get(&digest)?.clone();
        self.matched
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(presented.into(), key.clone());
        Some(key)
    }

    /// The tenant called `name`: the file's, with its limits, or one without limits.
    pub fn tenant(&self, name: &str) -> Arc<Tenant> {
        self.tenants.get(name).cloned().unwrap_or_else(|| {
            Arc::new(Tenant {
                name: Arc::from(name),
                scope: Scope::new(&Limits::default(), None),
                admitted: OnceLock::new(),
            })
        })
    }

    /// Keys in force.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Reads `path`; `previous` hands its limits' state over to the keys and tenants that stay.
    /// An error names the file, and the line and column or the entry where it can.
    pub fn load(path: &Path, previous: &Keyring) -> Result<Self, String> {
        let at = path.display();
        let text = crate::files::read_bounded_text(path, MAX_FILE_BYTES).map_err(|e| format!("{at}: {e}"))?;
        let file: KeysFile = if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
            serde_json::from_str(&text).map_err(|e| format!("{at}:{}:{}: {e}", e.line(), e.column()))?
        } else {
            toml::from_str(&text).map_err(|e| format!("{at}: {}", e.to_string().trim_end()))?
        };
        let old_tenants: HashMap<&str, &Arc<Tenant>> = previous
            .tenants
            .iter()
            .map(|(name, t)| (name.as_str(), t))
            .collect();
        let old_keys: HashMap<&str, &Arc<Key>> = previous.by_digest.values().map(|k| (&*k.id, k)).collect();
        let mut tenants: HashMap<String, Arc<Tenant>> = HashMap::new();
        for (name, entry) in &file.tenants {
            entry
                .limits
                .check()
                .map_err(|e| format!("{at}: tenants.{name}.limits: {e}"))?;
            let carried = old_tenants.get(name.as_str()).map(|t| &t.scope);
            tenants.insert(
                name.clone(),
                Arc::new(Tenant {
                    name: Arc::from(name.as_str()),
                    scope: Scope::new(&entry.limits, carried),
                    admitted: OnceLock::new(),
                }),
            );
        }
        let mut by_digest = HashMap::new();
        let mut ids = BTreeSet::new();
        for (i, entry) in file.keys.iter().enumerate() {
            let place = format!("{at}: keys[{i}] ({})", entry.id);
            let digest = parse_digest(&entry.sha256).map_err(|e| format!("{place}: sha256: {e}"))?;
            entry
                .limits
                .check()
                .map_err(|e| format!("{place}: limits: {e}"))?;
            if !ids.insert(entry.id.clone()) {
                return Err(format!("{place}: the id appears twice"));
            }
            let tenant = match tenants.get(&entry.tenant) {
                Some(t) => t.clone(),
                // A tenant without a table of its own has no limits of its own.
                None => {
                    let carried = old_tenants.get(entry.tenant.as_str()).map(|t| &t.scope);
                    let tenant = Arc::new(Tenant {
                        name: Arc::from(entry.tenant.as_str()),
                        scope: Scope::new(&Limits::default(), carried),
                        admitted: OnceLock::new(),
                    });
                    tenants.insert(entry.tenant.clone(), tenant.clone());
                    tenant
                }
            };
            let carried = old_keys.get(entry.id.as_str()).map(|k| &k.scope);
            let key = Arc::new(Key {
                id: Arc::from(entry.id.as_str()),
                tenant,
                routes: entry.routes.clone(),
                models: entry.models.clone(),
                scope: Scope::new(&entry.limits, carried),
            });
            if by_digest.insert(digest, key).is_some() {
                return Err(format!("{place}: the same key is listed twice"));
            }
        }
        Ok(Self {
            by_digest,
            tenants,
            matched: RwLock::default(),
        })
    }
}

/// 64 hex digits.
fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be 64 hex digits, the SHA-256 of the key (`augur keys hash`)".into());
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex digits");
    }
    Ok(digest)
}

/// The hex SHA-256 of `key`: what the keys file stores for it.
pub fn digest_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("augur-keyring-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn keys_are_found_by_their_digest_and_errors_name_the_entry() {
        let good = write(
            "keys.toml",
            &format!(
                "[tenants.a]\nlimits = {{ concurrent = 2 }}\n[[keys]]\nid = \"a-1\"\ntenant = \"a\"\nsha256 = \"{}\"\nroutes = [\"chat\"]\n",
                digest_hex("sk-alpha")
            ),
        );
        let ring = Keyring::load(&good, &Keyring::default()).unwrap();
        let key = ring.find(b"sk-alpha").expect("the key");
        assert_eq!((&*key.id, &*key.tenant.name), ("a-1", "a"));
        assert!(ring.find(b"sk-beta").is_none());
        assert_eq!(
            digest_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );

        let bad = write(
            "bad.toml",
            "[[keys]]\nid = \"x\"\ntenant = \"a\"\nsha256 = \"nope\"\n",
        );
        let e = Keyring::load(&bad, &ring).unwrap_err();
        assert!(e.contains("keys[0] (x): sha256: must be 64 hex digits"), "{e}");
        let typo = write(
            "typo.json",
            "{\"keys\": [{\"id\": \"x\", \"tenant\": \"a\", \"sha\": \"\"}]}",
        );
        let e = Keyring::load(&typo, &ring).unwrap_err();
        assert!(
            e.contains("typo.json:1:") && e.contains("unknown field `sha`"),
            "{e}"
        );
        let twice = write(
            "twice.toml",
            &format!(
                "[[keys]]\nid = \"x\"\ntenant = \"a\"\nsha256 = \"{d}\"\n[[keys]]\nid = \"y\"\ntenant = \"a\"\nsha256 = \"{d}\"\n",
                d = digest_hex("same")
            ),
        );
        assert!(Keyring::load(&twice, &ring).unwrap_err().contains("listed twice"));
        for path in [good, bad, typo, twice] {
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }
}
