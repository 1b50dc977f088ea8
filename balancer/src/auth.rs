//! Who is calling: the admin token (from config), client API tokens (`plbc_...`) and agent
//! tokens (`plba_...`). Tokens are 32 random bytes in hex behind their prefix; the store
//! keeps only their sha256, so a stolen database holds no usable token. A small cache
//! of hash -> owner saves a store read per request; revocation empties it. Lookups the
//! cache cannot answer (unknown tokens among them) take at most a few of the store's
//! read connections at once and wait for them, so a flood of made-up tokens neither
//! opens connections without bound nor takes every reader from other requests.
//!
//! Agent tokens and nodes: an agent token is enrolled for a set of pools at creation and
//! binds to the first node it registers; from then on it registers and reports for that
//! node only. A node held by a revoked token can be taken over by a new token.
use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::AppError;
use crate::state::AppState;
use crate::store::{Store, TokenHash, TokenOwner};

/// Prefix of client API tokens.
pub const CLIENT_PREFIX: &str = "plbc_";
/// Prefix of agent tokens.
pub const AGENT_PREFIX: &str = "plba_";

/// Most cached tokens; the cache is emptied when full.
const CACHE_CAP: usize = 10_000;

/// Store lookups of uncached tokens at once, by default.
const LOOKUPS: usize = 2;

/// A fresh random token with `prefix`.
pub fn generate_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The sha256 of a token: what the store keeps.
pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two hashes.
fn same(a: &TokenHash, b: &TokenHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The admin token.
    Admin,
    /// A client.
    Client {
        /// Its id.
        client_id: i64,
    },
    /// An agent token.
    Agent {
        /// The token's id.
        token_id: i64,
        /// The client owning its pools.
        client_id: i64,
    },
}

impl Principal {
    /// The client id, or 403 for the admin and agent tokens.
    pub fn client(self) -> Result<i64, AppError> {
        match self {
            Principal::Client { client_id } => Ok(client_id),
            _ => Err(AppError::Forbidden(
                "this endpoint needs a client API token".into(),
            )),
        }
    }

    /// `(token_id, client_id)` of an agent token, or 403.
    pub fn agent(self) -> Result<(i64, i64), AppError> {
        match self {
            Principal::Agent {
                token_id,
                client_id,
            } => Ok((token_id, client_id)),
            _ => Err(AppError::Forbidden(
                "this endpoint needs an agent token".into(),
            )),
        }
    }

    /// `Ok` for the admin token, else 403.
    pub fn admin(self) -> Result<(), AppError> {
        match self {
            Principal::Admin => Ok(()),
            _ => Err(AppError::Forbidden(
                "this endpoint needs the admin token".into(),
            )),
        }
    }
}

/// Token checking: the admin token's hash and the cache.
pub struct Auth {
    admin: TokenHash,
    /// `--metrics-token`'s hash, if set.
    metrics: Option<TokenHash>,
    cache: RwLock<HashMap<TokenHash, TokenOwner>>,
    /// Bumped on every revocation, so a lookup that raced with one is not cached.
    generation: AtomicU64,
    /// Bounds the store lookups of uncached tokens in flight.
    lookups: Semaphore,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").finish_non_exhaustive()
    }
}

impl Auth {
    /// Checks tokens against `admin_token` and the store.
    pub fn new(admin_token: &str) -> Self {
        Auth {
            admin: hash_token(admin_token),
            metrics: None,
            cache: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            lookups: Semaphore::new(LOOKUPS),
        }
    }

    /// Lets at most `n` (at least 1) store lookups of uncached tokens run at once; more
    /// wait. Half the store's read connections leaves the other half to the requests of
    /// known tokens.
    pub fn with_lookup_limit(mut self, n: usize) -> Self {
        self.lookups = Semaphore::new(n.max(1));
        self
    }

    /// Also accepts `token` (`--metrics-token`) for `/metrics`.
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics = token.map(hash_token);
        self
    }

    /// Whether a metrics token is configured (then `/metrics` needs a token).
    pub fn metrics_token_set(&self) -> bool {
        self.metrics.is_some()
    }

    /// Whether `token` may read every series of `/metrics`: the metrics or the admin
    /// token (compared in constant time).
    pub fn metrics_reader(&self, token: &str) -> bool {
        let hash = hash_token(token);
        let metrics = self.metrics.as_ref().is_some_and(|m| same(&hash, m));
        same(&hash, &self.admin) | metrics
    }

    /// Forgets every cached token: call after a revocation has committed.
    pub fn revoked(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut c) = self.cache.write() {
            c.clear();
        }
    }

    /// Who `token` belongs to.
    pub async fn authenticate(
        &self,
        store: &dyn Store,
        token: &str,
    ) -> Result<Principal, AppError> {
        let hash = hash_token(token);
        if same(&hash, &self.admin) {
            return Ok(Principal::Admin);
        }
        let agent = if token.starts_with(AGENT_PREFIX) {
            true
        } else if token.starts_with(CLIENT_PREFIX) {
            false
        } else {
            return Err(unknown());
        };
        let cached = || self.cache.read().ok().and_then(|c| c.get(&hash).copied());
        let owner = match cached() {
            Some(o) => o,
            None => {
                let _lookup = self
                    .lookups
                    .acquire()
                    .await
                    .map_err(|_| AppError::Unavailable("shutting down".into()))?;
                // Another request of the same token may have looked it up meanwhile.
                if let Some(o) = cached() {
                    return Ok(o.into());
                }
                let generation = self.generation.load(Ordering::SeqCst);
                let owner = store.token_owner(hash, agent).await?.ok_or_else(unknown)?;
                if let Ok(mut c) = self.cache.write()
                    && self.generation.load(Ordering::SeqCst) == generation
                {
                    if c.len() >= CACHE_CAP {
                        c.clear();
                    }
                    c.insert(hash, owner);
                }
                owner
            }
        };
        Ok(owner.into())
    }
}

impl From<TokenOwner> for Principal {
    fn from(owner: TokenOwner) -> Self {
        match owner {
            TokenOwner::Client { client_id } => Principal::Client { client_id },
            TokenOwner::Agent {
                token_id,
                client_id,
            } => Principal::Agent {
                token_id,
                client_id,
            },
        }
    }
}

fn unknown() -> AppError {
    AppError::Unauthorized("unknown or revoked token".into())
}

/// The bearer token of a request, or 401.
fn bearer(parts: &Parts) -> Result<&str, AppError> {
    bearer_in(&parts.headers)
}

/// The bearer token in `headers`, or 401.
pub fn bearer_in(headers: &axum::http::HeaderMap) -> Result<&str, AppError> {
    let missing =
        || AppError::Unauthorized("missing `Authorization: Bearer <token>` header".into());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(missing)?
        .to_str()
        .map_err(|_| AppError::Unauthorized("the Authorization header is not text".into()))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, AppError> {
        let token = bearer(parts)?;
        st.auth.authenticate(st.store.as_ref(), token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_hex() {
        let a = generate_token(CLIENT_PREFIX);
        let b = generate_token(CLIENT_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("plbc_"));
        assert_eq!(a.len(), 5 + 64);
        assert!(a[5..].bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert!(!same(&hash_token(&a), &hash_token(&b)));
    }
}
