//! [`Upstream`] over the prediction engine: the proxied pool is named by its owner's client
//! id and its name (a [`PoolKey`]), so no other tenant's pool can stand in for it; every
//! request is a [`PoolRouter::route`] decision and every answer a
//! [`PoolRouter::feedback`].
//!
//! The pool may not exist yet when the balancer starts (it is created over the API
//! later): until the engine's topology refresh (every tick) knows it and its nodes, the
//! proxy answers 503.
use std::sync::Arc;

use crate::engine::{Engine, PoolKey, PoolRouter, RouteQuery, Routed};

use super::{Hint, Unavailable, Upstream};

/// One pool of the engine, by owner and name.
#[derive(Debug)]
pub struct EngineUpstream {
    engine: Arc<Engine>,
    key: PoolKey,
}

/// A decision and the router that made it (feedback goes back to the same router even
/// if the pool's router is replaced in between).
#[derive(Debug)]
pub struct EngineRouted {
    router: Arc<PoolRouter>,
    routed: Routed,
}

impl EngineUpstream {
    /// The upstream for the pool `key`.
    pub fn new(engine: Arc<Engine>, key: PoolKey) -> Self {
        EngineUpstream { engine, key }
    }

    /// The pool's router now.
    pub fn router(&self) -> Result<Arc<PoolRouter>, Unavailable> {
        self.engine.pool(&self.key).ok_or(Unavailable::NoPool)
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

    fn unreachable(&self, r: &EngineRouted) {
        r.router.feedback_unreachable(&r.routed);
    }

    fn unreachable_nodes(&self) -> Vec<(String, String)> {
        self.router()
            .map(|r| r.unreachable_nodes())
            .unwrap_or_default()
    }

    fn reachable(&self, node: &str) {
        if let Ok(r) = self.router() {
            r.reachable(node);
        }
    }
}
