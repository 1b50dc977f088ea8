//! The proxy's keep-alive connections to nodes, one set per proxy thread (each thread has
//! its own [`Forwarder`](super::Forwarder)), keyed by node address.
//!
//! A request takes the most recently used idle connection to its node that is still open
//! (or opens one through the policy-checked connector), sends on it, and hands the
//! connection back with the response as a [`Lease`]: the response body gives it back to
//! the idle set once it has streamed to its end, so that a connection carries one
//! exchange at a time and is never shared by two threads. No task is spawned per request
//! and no lock is contended (hyper-util's pooled client spawned one per request to put
//! the connection back, and took a shared pool's lock twice).
//!
//! A pooled connection the node closed just as a request was sent on it gives the request
//! back unsent; it is then sent once more on a fresh connection (what every pooled client
//! does). Idle connections are closed after the idle timeout ([`Conns::sweep`]).
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::http::uri::Authority;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::time::Instant;
use tower::Service;

use super::body::UpstreamBody;
use crate::netpolicy::PolicyResolver;

/// Why a request got no response.
#[derive(Debug)]
pub enum SendError {
    /// The node's address is not a `host:port` authority.
    Address(String),
    /// No connection to the node could be made.
    Connect(String),
    /// The connection failed before the response headers.
    Transport(String),
}

/// A node's connections that wait for a request.
#[derive(Debug)]
struct Slot {
    addr: Arc<str>,
    idle: Vec<Idle>,
}

#[derive(Debug)]
struct Idle {
    send: SendRequest<UpstreamBody>,
    since: Instant,
}

/// The idle connections of one proxy thread, by node address.
#[derive(Debug)]
pub struct Conns {
    connector: HttpConnector<PolicyResolver>,
    idle_timeout: Duration,
    slots: Mutex<HashMap<Arc<str>, Slot>>,
}

/// A connection carrying one exchange; given back with [`Lease::release`] when the
/// response has been read to its end (dropped otherwise, which closes it).
#[derive(Debug)]
pub struct Lease {
    conns: Arc<Conns>,
    addr: Arc<str>,
    send: SendRequest<UpstreamBody>,
}

impl Lease {
    /// The exchange is complete: the connection may carry the next request.
    pub fn release(self) {
        self.conns.put(self.addr, self.send);
    }
}

impl Conns {
    /// Connections made by `connector`, closed after `idle_timeout` unused.
    pub fn new(connector: HttpConnector<PolicyResolver>, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Conns {
            connector,
            idle_timeout,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `req` (origin-form, with a `Host` header) to the node at `addr` (`host:port`).
    pub async fn send(
        self: &Arc<Self>,
        addr: &str,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        let (addr, mut pooled) = self.checkout(addr)?;
        loop {
            let reused = pooled.is_some();
            let mut send = match pooled.take() {
                Some(mut send) => {
                    // Normally ready already; else its last exchange is just finishing.
                    if send.ready().await.is_err() {
                        self.connect(&addr).await?
                    } else {
                        send
                    }
                }
                None => self.connect(&addr).await?,
            };
            match send.try_send_request(req).await {
                Ok(resp) => {
                    let lease = Lease {
                        conns: Arc::clone(self),
                        addr,
                        send,
                    };
                    return Ok((resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    // The node closed the idle connection as the request went out: the
                    // request was not sent; once more on a fresh connection.
                    Some(unsent) if reused => req = unsent,
                    _ => {
                        return Err(SendError::Transport(describe(
                            "the connection failed before the response",
                            &e.into_error(),
                        )));
                    }
                },
            }
        }
    }

    /// The node's key and its most recently used idle connection that is still open.
    #[allow(clippy::type_complexity)]
    fn checkout(
        &self,
        addr: &str,
    ) -> Result<(Arc<str>, Option<SendRequest<UpstreamBody>>), SendError> {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = match slots.get_mut(addr) {
            Some(slot) => slot,
            None => {
                Authority::from_str(addr)
                    .map_err(|e| SendError::Address(format!("`{addr}`: {e}")))?;
                let key: Arc<str> = Arc::from(addr);
                slots.entry(Arc::clone(&key)).or_insert(Slot {
                    addr: key,
                    idle: Vec::new(),
                })
            }
        };
        while let Some(idle) = slot.idle.pop() {
            if !idle.send.is_closed() && now.duration_since(idle.since) < self.idle_timeout {
                return Ok((Arc::clone(&slot.addr), Some(idle.send)));
            }
        }
        Ok((Arc::clone(&slot.addr), None))
    }

    /// Back to the idle set, unless the node closed it.
    fn put(&self, addr: Arc<str>, send: SendRequest<UpstreamBody>) {
        if send.is_closed() {
            return;
        }
        let idle = Idle {
            send,
            since: Instant::now(),
        };
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        match slots.get_mut(&*addr) {
            Some(slot) => slot.idle.push(idle),
            None => {
                slots.insert(
                    Arc::clone(&addr),
                    Slot {
                        addr,
                        idle: vec![idle],
                    },
                );
            }
        }
    }

    /// Opens a connection to `addr` and starts its task on this thread's runtime.
    async fn connect(&self, addr: &str) -> Result<SendRequest<UpstreamBody>, SendError> {
        let uri = Uri::from_str(&format!("http://{addr}"))
            .map_err(|e| SendError::Address(format!("`{addr}`: {e}")))?;
        let io = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(|e| SendError::Connect(describe("cannot connect", &e)))?;
        let (send, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Transport(describe("the connection failed", &e)))?;
        let addr = addr.to_owned();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(node = %addr, error = %e, "node connection ended with an error");
            }
        });
        Ok(send)
    }

    /// Closes the connections idle longer than the idle timeout (and forgets the ones the
    /// nodes closed, and nodes with none left).
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| {
            slot.idle
                .retain(|i| !i.send.is_closed() && now.duration_since(i.since) < self.idle_timeout);
            !slot.idle.is_empty()
        });
    }

    /// Runs [`Conns::sweep`] a few times per idle timeout for as long as the set lives.
    pub async fn sweep_while_alive(this: std::sync::Weak<Conns>) {
        let period = match this.upgrade() {
            Some(c) => (c.idle_timeout / 4).max(Duration::from_millis(250)),
            None => return,
        };
        loop {
            tokio::time::sleep(period).await;
            match this.upgrade() {
                Some(c) => c.sweep(),
                None => return,
            }
        }
    }

    /// Idle connections held (for tests).
    pub fn idle(&self) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.values().map(|s| s.idle.len()).sum()
    }
}

/// The IP address of `host:port` (or of a bare host) when the host is one.
pub fn authority_ip(addr: &str) -> Option<IpAddr> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    addr.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// `what`, then the error's chain of causes.
fn describe(what: &str, e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = what.to_owned();
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Either, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::netpolicy::NetPolicy;

    /// A loopback HTTP/1.1 server counting the connections it accepted and saw closed.
    async fn server() -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let (accepted, closed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, c) = (Arc::clone(&accepted), Arc::clone(&closed));
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let c = Arc::clone(&c);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted, closed)
    }

    fn get(addr: &str) -> Request<UpstreamBody> {
        Request::get("/")
            .header(hyper::header::HOST, addr)
            .body(Either::Left(Full::new(Bytes::new())))
            .expect("request")
    }

    #[tokio::test]
    async fn a_released_connection_carries_the_next_request_until_the_idle_timeout() {
        let (addr, accepted, closed) = server().await;
        let connector =
            HttpConnector::new_with_resolver(PolicyResolver::new(NetPolicy::nodes(&[])));
        let conns = Conns::new(connector, Duration::from_millis(300));
        for _ in 0..3 {
            let (resp, lease) = conns.send(&addr, get(&addr)).await.expect("answer");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(&body[..], b"ok");
            lease.release();
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection, reused");
        assert_eq!(conns.idle(), 1);
        // A lease dropped without release closes its connection: the next opens another.
        let (resp, lease) = conns.send(&addr, get(&addr)).await.expect("answer");
        drop((resp, lease));
        let (resp, lease) = conns.send(&addr, get(&addr)).await.expect("answer");
        resp.into_body().collect().await.expect("body");
        lease.release();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Idle past the timeout: swept, and the node sees both connections closed.
        tokio::time::sleep(Duration::from_millis(400)).await;
        conns.sweep();
        assert_eq!(conns.idle(), 0);
        let deadline = Instant::now() + Duration::from_secs(5);
        while closed.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(closed.load(Ordering::SeqCst), 2, "both connections closed");
    }

    #[tokio::test]
    async fn an_address_that_is_not_host_port_is_refused_before_connecting() {
        let connector =
            HttpConnector::new_with_resolver(PolicyResolver::new(NetPolicy::nodes(&[])));
        let conns = Conns::new(connector, Duration::from_secs(1));
        let e = conns
            .send("a b:80", get("x"))
            .await
            .map(|_| ())
            .expect_err("refused");
        assert!(matches!(e, SendError::Address(_)), "{e:?}");
    }

    #[test]
    fn authority_ips() {
        assert_eq!(authority_ip("10.0.0.1:80"), "10.0.0.1".parse().ok());
        assert_eq!(authority_ip("[::1]:8080"), "::1".parse().ok());
        assert_eq!(authority_ip("10.0.0.1"), "10.0.0.1".parse().ok());
        assert_eq!(authority_ip("[::1]"), "::1".parse().ok());
        assert_eq!(authority_ip("node-a.internal:80"), None);
    }
}
