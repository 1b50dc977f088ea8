//! A webhook receiver for tests: an HTTP server on loopback, on a thread and runtime of
//! its own (so it serves plain `#[test]`s and tokio tests alike), that records every
//! `POST /hook` with its delivery id, event and whether its signature checked out. A
//! silent one ([`WebhookReceiver::never_answering`]) records each POST and never answers
//! it (an endpoint that hangs).
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use plb_api::Notification;

/// One POST the receiver got.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `x-plb-delivery`.
    pub delivery: String,
    /// `x-plb-event`.
    pub event: String,
    /// What the test's check said of `x-plb-signature` over the body, at arrival.
    pub signature_ok: bool,
    /// The body.
    pub body: Notification,
}

/// The signature check: `(x-plb-signature, body) -> ok`.
type Check = dyn Fn(&str, &[u8]) -> bool + Send + Sync;

/// A running receiver; stopped (its runtime dropped, every connection cut) when dropped.
#[derive(Debug)]
pub struct WebhookReceiver {
    got: Arc<Mutex<Vec<Delivery>>>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Starts a receiver on `addr` (port 0 for any free port) that answers every POST
    /// with 204 and records it, checking its signature with `check`. Returns once it
    /// listens.
    pub fn start(
        addr: SocketAddr,
        check: impl Fn(&str, &[u8]) -> bool + Send + Sync + 'static,
    ) -> WebhookReceiver {
        Self::serve(addr, Arc::new(check), true)
    }

    /// Starts a receiver on `addr` that records every POST (signature unchecked, as
    /// `false`) and never answers it: the connection stays open until the sender gives
    /// up or the receiver is dropped.
    pub fn never_answering(addr: SocketAddr) -> WebhookReceiver {
        Self::serve(addr, Arc::new(|_: &str, _: &[u8]| false), false)
    }

    fn serve(addr: SocketAddr, check: Arc<Check>, answer: bool) -> WebhookReceiver {
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let g = Arc::clone(&got);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let app = axum::Router::new().route(
                    "/hook",
                    axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                        let (g, check) = (Arc::clone(&g), Arc::clone(&check));
                        async move {
                            let h = |n: &str| {
                                headers
                                    .get(n)
                                    .and_then(|v| v.to_str().ok())
                                    .unwrap_or_default()
                                    .to_string()
                            };
                            let d = Delivery {
                                delivery: h("x-plb-delivery"),
                                event: h("x-plb-event"),
                                signature_ok: check(&h("x-plb-signature"), &body),
                                body: serde_json::from_slice(&body)
                                    .expect("the body is a Notification"),
                            };
                            g.lock().expect("lock").push(d);
                            if !answer {
                                std::future::pending::<()>().await;
                            }
                            StatusCode::NO_CONTENT
                        }
                    }),
                );
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .expect("bind the receiver");
                let _ = ready_tx.send(l.local_addr().expect("addr"));
                tokio::spawn(async move {
                    let _ = axum::serve(l, app).await;
                });
                // Until stopped; then the runtime is dropped with every connection.
                let _ = stopped.await;
            });
        });
        let addr = ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the receiver listens");
        WebhookReceiver {
            got,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR/hook`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every POST so far, in arrival order.
    pub fn received(&self) -> Vec<Delivery> {
        self.got.lock().expect("lock").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
