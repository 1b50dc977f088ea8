//! Shared helpers for the runtime's tests: a runtime, a spec builder and a tiny real
//! HTTP server on a loopback port.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use plb_runtime::{Limits, Probe, RunReport, RunSpec, Runtime, RuntimeConfig, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub fn runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        max_concurrent_runs: 16,
        max_memory_mib: 128,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

pub fn spec(address: &str, config: &[(&str, &str)], limits: Limits) -> RunSpec {
    RunSpec {
        target: Target {
            node: "n1".into(),
            address: address.into(),
        },
        config: config
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        limits,
    }
}

pub async fn run(rt: &Runtime, wasm: &[u8], s: &RunSpec) -> RunReport {
    rt.run(&Probe::new(wasm.to_vec()), s).await
}

/// A real HTTP/1.1 server: `/health` answers 200 `ok`, `/status` answers a JSON body,
/// `/fail` answers 500, anything else 404. Counts requests.
pub async fn http_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                loop {
                    let Ok(m) = sock.read(&mut buf[n..]).await else {
                        return;
                    };
                    if m == 0 {
                        return;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                        break;
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]);
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (status, body) = match path.as_str() {
                    "/health" => ("200 OK", "ok".to_string()),
                    "/status" => ("200 OK", r#"{"queue":7,"state":"fine"}"#.to_string()),
                    "/fail" => ("500 Internal Server Error", "boom".to_string()),
                    _ => ("404 Not Found", "nope".to_string()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// An address on loopback where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}
