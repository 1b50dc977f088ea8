//! [`Upstream`] over the prediction engine: the proxied pool is found by name (pool names
//! are unique per client only, so a name two clients use is refused), then every request
//! is a [`PoolRouter::route`] decision and every answer a [`PoolRouter::feedback`].
//!
//! The pool may not exist yet when the balancer starts (it is created over the API
//! later): until the engine's topology refresh (every tick) knows it and its nodes, the
//! proxy answers 503.
use std::sync::{Arc, OnceLock};

use crate::engine::{Engine, PoolKey, PoolRouter, RouteQuery, Routed};

use super::{Hint, ProxyError, Unavailable, Upstream};

/// One pool of the engine, by name.
#[derive(Debug)]
pub struct EngineUpstream {
    engine: Arc<Engine>,
    pool: String,
    key: OnceLock<PoolKey>,
}

/// A decision and the router that made it (feedback goes back to the same router even
/// if the pool's router is replaced in between).
#[derive(Debug)]
pub struct EngineRouted {
    router: Arc<PoolRouter>,
    routed: Routed,
}

impl EngineUpstream {
    /// The upstream for the pool named `pool`; refused when two clients own such a pool.
    pub fn new(engine: Arc<Engine>, pool: &str) -> Result<Self, ProxyError> {
        let up = EngineUpstream {
            engine,
            pool: pool.to_owned(),
            key: OnceLock::new(),
        };
        match up.resolve() {
            Err(Unavailable::Other(_)) => Err(ProxyError::AmbiguousPool {
                pool: pool.to_owned(),
                count: up.engine.pools_named(pool).len(),
            }),
            _ => Ok(up),
        }
    }

    /// The pool's key, once it is known (fixed from then on).
    fn resolve(&self) -> Result<&PoolKey, Unavailable> {
        if let Some(k) = self.key.get() {
            return Ok(k);
        }
        let mut keys = self.engine.pools_named(&self.pool);
        match keys.len() {
            0 => Err(Unavailable::NoPool),
            1 => {
                let k = keys.remove(0);
                Ok(self.key.get_or_init(|| k))
            }
            n => Err(Unavailable::Other(format!(
                "{n} clients have a pool named `{}`; the proxy cannot tell which one to serve",
                self.pool
            ))),
        }
    }

    /// The pool's router now.
    pub fn router(&self) -> Result<Arc<PoolRouter>, Unavailable> {
        let key = self.resolve()?;
        self.engine.pool(key).ok_or(Unavailable::NoPool)
    }
}

impl Upstream for EngineUpstream {
    type Routed = EngineRouted;

    fn route(&self, hint: &Hint, exclude: &[&str]) -> Result<EngineRouted, Unavailable> {
        let router = self.router()?;
        let q = RouteQuery {
            key: hint.key.clone(),
            size: hint.size,
            cost: hint.cost,
        };
        let routed = router.route(&q, exclude).ok_or(Unavailable::NoNodes)?;
        Ok(EngineRouted { router, routed })
    }

    fn node<'a>(&self, r: &'a EngineRouted) -> &'a str {
        &r.routed.node
    }

    fn address<'a>(&self, r: &'a EngineRouted) -> &'a str {
        &r.routed.address
    }

    fn feedback(&self, r: &EngineRouted, latency_ms: f64, ok: bool) {
        r.router.feedback(&r.routed, latency_ms, ok);
    }
}
