//! JSON Web Tokens for routes with `auth = "jwt"`: signed by an identity provider whose public keys
//! are in a JWKS file, carrying the issuer and an audience `[auth.jwt]` names, not expired, and
//! naming their tenant in a claim.
//!
//! The algorithm comes from the key, never from the token: a token whose header names another is
//! refused, so a public key cannot be turned into an HMAC secret, and `none` is never accepted.

use std::collections::HashMap;
use std::path::Path;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::JwtConfig;

/// Largest JWKS file read.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The provider's public keys, each with the one algorithm it verifies.
pub struct Jwks {
    keys: Vec<VerifyingKey>,
}

struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithm: Algorithm,
}

impl Jwks {
    /// Reads `path`: a JSON Web Key Set. Keys for encryption (`"use": "enc"`) are left out; a key
    /// whose algorithm cannot be told, or that does not parse, refuses the file, naming it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let at = path.display();
        let text = crate::files::read_bounded_text(path, MAX_FILE_BYTES).map_err(|e| format!("{at}: {e}"))?;
        let set: JwkSet = serde_json::from_str(&text)
            .map_err(|e| format!("{at}:{}:{}: not a JWKS: {e}", e.line(), e.column()))?;
        let mut keys = Vec::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let name = jwk.common.key_id.as_deref().unwrap_or("without kid");
            if jwk.common.public_key_use == Some(jsonwebtoken::jwk::PublicKeyUse::Encryption) {
                continue;
            }
            let place = format!("{at}: keys[{i}] ({name})");
            let algorithm = algorithm_of(jwk).ok_or_else(|| {
                format!("{place}: give its `alg`: the key type does not say which algorithm it verifies")
            })?;
            if matches!(algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                return Err(format!(
                    "{place}: a shared secret (HMAC) has no place in a public key set"
                ));
            }
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("{place}: {e}"))?;
            keys.push(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                key,
                algorithm,
            });
        }
        if keys.is_empty() {
            return Err(format!("{at}: no signing key in the set"));
        }
        Ok(Self { keys })
    }

    /// Verifies `token` under `config`: returns its tenant, or why it is not valid.
    pub fn verify(&self, token: &str, config: &JwtConfig) -> Result<String, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("malformed: {e}"))?;
        let key = match &header.kid {
            Some(kid) => self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if self.keys.len() == 1 => self.keys.first(),
            None => None,
        }
        .ok_or("signed by a key the set does not hold")?;
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&config.audience);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<HashMap<String, Value>>(token, &key.key, &validation)
            .map_err(|e| e.to_string())?
            .claims;
        match claims.get(&config.tenant_claim) {
            Some(Value::String(tenant)) if !tenant.is_empty() => Ok(tenant.clone()),
            _ => Err(format!("no `{}` claim naming its tenant", config.tenant_claim)),
        }
    }
}

/// The algorithm a key verifies: its `alg`, else the one its type and curve allow.
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(alg) = jwk.common.key_algorithm {
        return match alg {
            KeyAlgorithm::RS256 => Some(Algorithm::RS256),
            KeyAlgorithm::RS384 => Some(Algorithm::RS384),
            KeyAlgorithm::RS512 => Some(Algorithm::RS512),
            KeyAlgorithm::PS256 => Some(Algorithm::PS256),
            KeyAlgorithm::PS384 => Some(Algorithm::PS384),
            KeyAlgorithm::PS512 => Some(Algorithm::PS512),
            KeyAlgorithm::ES256 => Some(Algorithm::ES256),
            KeyAlgorithm::ES384 => Some(Algorithm::ES384),
            KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
            KeyAlgorithm::HS256 => Some(Algorithm::HS256),
            KeyAlgorithm::HS384 => Some(Algorithm::HS384),
            KeyAlgorithm::HS512 => Some(Algorithm::HS512),
            _ => None,
        };
    }
    match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Some(Algorithm::ES256),
            EllipticCurve::P384 => Some(Algorithm::ES384),
            _ => None,
        },
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        // RSA keys sign with several algorithms: the set must say which.
        _ => None,
    }
}
