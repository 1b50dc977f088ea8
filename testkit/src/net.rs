//! Loopback addresses for tests: free ports, and a TCP target that accepts and closes.
use std::net::{SocketAddr, TcpListener};

/// A loopback port free right now (bound to port 0, then released). Also a port where
/// nothing listens, until someone binds it.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// `127.0.0.1:<a port free right now>`.
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A loopback address as `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A node for probes to measure: a loopback TCP port, served by a thread of its own,
/// that accepts every connection and closes it at once. Returns `127.0.0.1:port`.
pub fn tcp_target() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    addr
}
