//! The host functions a probe may call (`plb:probe/host`): `log`, `http` and
//! `tcp-connect`, the last two reaching the run's target address and nothing else,
//! plus the per-run store state that WASI and the host functions share.
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::plb::probe::{host, types};
use crate::bindings::{HttpResponse, Level};
use crate::capture::Capture;
use crate::limits::RunLimiter;

/// Everything one run's `Store` holds.
pub(crate) struct RunState {
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: RunLimiter,
    pub capture: Capture,
    /// `host:port` of the node under test.
    pub address: String,
    /// When the run's wall-clock budget ends.
    pub deadline: Instant,
    pub max_http_body: usize,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl RunState {
    /// The smaller of the guest's timeout and what is left of the run's budget.
    fn budget(&self, timeout_ms: u32) -> Duration {
        let left = self.deadline.saturating_duration_since(Instant::now());
        Duration::from_millis(u64::from(timeout_ms.max(1))).min(left)
    }
}

impl types::Host for RunState {}

impl host::Host for RunState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let line = format!("[{}] {}\n", level.as_str(), message);
        self.capture
            .push(line.as_bytes())
            .map_err(wasmtime::Error::new)
    }

    async fn http(
        &mut self,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<HttpResponse, String>> {
        let budget = self.budget(timeout_ms);
        let req = HttpCall {
            address: &self.address,
            method: &method,
            path: &path,
            headers: &headers,
            body,
            max_body: self.max_http_body,
        };
        Ok(req.send(budget).await)
    }

    async fn tcp_connect(&mut self, timeout_ms: u32) -> wasmtime::Result<Result<f64, String>> {
        let budget = self.budget(timeout_ms);
        let start = Instant::now();
        Ok(
            match tokio::time::timeout(budget, TcpStream::connect(self.address.as_str())).await {
                Ok(Ok(_stream)) => Ok(ms_since(start)),
                Ok(Err(e)) => Err(format!("connect to {}: {e}", self.address)),
                Err(_) => Err(format!(
                    "connect to {}: timed out after {} ms",
                    self.address,
                    budget.as_millis()
                )),
            },
        )
    }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}

/// One HTTP/1.1 request to the node's own address, timed by the host.
struct HttpCall<'a> {
    address: &'a str,
    method: &'a str,
    path: &'a str,
    headers: &'a [(String, String)],
    body: Vec<u8>,
    max_body: usize,
}

impl HttpCall<'_> {
    async fn send(self, budget: Duration) -> Result<HttpResponse, String> {
        let ms = budget.as_millis();
        match tokio::time::timeout(budget, self.exchange()).await {
            Ok(r) => r,
            Err(_) => Err(format!("http request timed out after {ms} ms")),
        }
    }

    async fn exchange(self) -> Result<HttpResponse, String> {
        // Only a path: the host picks the address, so a probe cannot reach anything else.
        if !self.path.starts_with('/') {
            return Err(format!(
                "path must start with '/' (requests go to the node's own address only), got {:?}",
                truncate(self.path, 100)
            ));
        }
        let method = hyper::Method::from_bytes(self.method.as_bytes())
            .map_err(|_| format!("invalid HTTP method {:?}", truncate(self.method, 32)))?;
        let mut builder = Request::builder()
            .method(method)
            .uri(self.path)
            .header(hyper::header::HOST, self.address);
        for (k, v) in self.headers {
            if k.eq_ignore_ascii_case("host") {
                continue;
            }
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(self.body)))
            .map_err(|e| format!("invalid request: {e}"))?;

        let start = Instant::now();
        let stream = TcpStream::connect(self.address)
            .await
            .map_err(|e| format!("connect to {}: {e}", self.address))?;
        let connect_ms = ms_since(start);
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("http handshake: {e}"))?;
        let driver = tokio::spawn(conn);
        let result = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| format!("http request: {e}"))?;
            let first_byte_ms = ms_since(start);
            let status = response.status().as_u16();
            let mut body = response.into_body();
            let mut bytes = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("reading body: {e}"))?;
                if let Some(chunk) = frame.data_ref() {
                    let room = self.max_body.saturating_sub(bytes.len());
                    bytes.extend_from_slice(&chunk[..room.min(chunk.len())]);
                    if chunk.len() > room {
                        break; // keep the first max_body bytes, stop reading
                    }
                }
            }
            Ok(HttpResponse {
                status,
                body: bytes,
                connect_ms,
                first_byte_ms,
                total_ms: ms_since(start),
            })
        }
        .await;
        driver.abort();
        result
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
