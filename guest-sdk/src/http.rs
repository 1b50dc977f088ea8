//! HTTP requests to the node's own address, made and timed by the host.
//!
//! The host sends the request to the run's target address and nowhere else,
//! so a request names a `path` (`/health`, `/status?verbose=1`), not a URL.
//! The host measures the timings, so they do not include the guest's own work.
//!
//! ```no_run
//! use plb_guest_sdk::{http, Failure};
//!
//! # fn check() -> Result<(), Failure> {
//! let response = http::Request::post("/admin/ping")
//!     .header("content-type", "application/json")
//!     .body(r#"{"ping":true}"#)
//!     .timeout_ms(500)
//!     .send()?;
//! println!("{} in {:.1} ms", response.status, response.total_ms);
//! # Ok(())
//! # }
//! ```

use std::borrow::Cow;

use crate::Error;

/// The timeout of a request that does not set one, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u32 = 5_000;

/// An HTTP request to the node, built step by step and sent with [`Request::send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout_ms: u32,
}

impl Request {
    /// A request with any method (`"GET"`, `"HEAD"`, `"PUT"`, ...) to `path`.
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Request {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }

    /// A `GET` request to `path`.
    pub fn get(path: impl Into<String>) -> Self {
        Request::new("GET", path)
    }

    /// A `POST` request to `path`.
    pub fn post(path: impl Into<String>) -> Self {
        Request::new("POST", path)
    }

    /// Replace the method.
    #[must_use]
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = method.into();
        self
    }

    /// Add a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Set the timeout for the whole request, in milliseconds (default
    /// [`DEFAULT_TIMEOUT_MS`]). The run's own deadline still applies.
    #[must_use]
    pub fn timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = timeout_ms;
        self
    }

    /// The request's method.
    pub fn method_str(&self) -> &str {
        &self.method
    }

    /// The request's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The request's headers, in the order added.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The request's timeout in milliseconds.
    pub fn timeout(&self) -> u32 {
        self.timeout_ms
    }

    /// Send the request through the host and wait for the whole response.
    ///
    /// Any HTTP status is an `Ok`: judging it is the probe's job. An `Err`
    /// means no response (connection refused, timeout, a path the host does
    /// not allow).
    pub fn send(&self) -> Result<Response, Error> {
        send(self).map_err(|message| Error::Http {
            method: self.method.clone(),
            path: self.path.clone(),
            message,
        })
    }
}

/// A response from the node, with the host's timings in milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The whole body (the host may cap its size).
    pub body: Vec<u8>,
    /// Time to open the TCP connection.
    pub connect_ms: f64,
    /// Time from the start until the first byte of the response.
    pub first_byte_ms: f64,
    /// Time from the start until the whole body was read.
    pub total_ms: f64,
}

impl Response {
    /// The body as text (invalid UTF-8 replaced by `U+FFFD`).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// `GET path` with the default timeout.
pub fn get(path: &str) -> Result<Response, Error> {
    Request::get(path).send()
}

#[cfg(target_arch = "wasm32")]
fn send(request: &Request) -> Result<Response, String> {
    let raw = crate::wit::plb::probe::host::http(
        &request.method,
        &request.path,
        &request.headers,
        &request.body,
        request.timeout_ms,
    )?;
    Ok(Response {
        status: raw.status,
        body: raw.body,
        connect_ms: raw.connect_ms,
        first_byte_ms: raw.first_byte_ms,
        total_ms: raw.total_ms,
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn send(_request: &Request) -> Result<Response, String> {
    Err(crate::Error::NotInSandbox("http").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets_every_part() {
        let request = Request::get("/health")
            .method("HEAD")
            .header("accept", "text/plain")
            .header("x-probe", "1")
            .body("hi")
            .timeout_ms(250);
        assert_eq!(request.method_str(), "HEAD");
        assert_eq!(request.path(), "/health");
        assert_eq!(request.headers().len(), 2);
        assert_eq!(request.headers()[1], ("x-probe".into(), "1".into()));
        assert_eq!(request.timeout(), 250);
        assert_eq!(Request::post("/x").timeout(), DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn outside_the_sandbox_send_is_an_error_naming_the_request() {
        let err = get("/health").expect_err("no host outside the sandbox");
        match err {
            Error::Http {
                method,
                path,
                message,
            } => {
                assert_eq!((method.as_str(), path.as_str()), ("GET", "/health"));
                assert!(
                    message.contains("only available inside the PLB sandbox"),
                    "{message}"
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn response_helpers() {
        let response = Response {
            status: 204,
            body: b"ok \xff".to_vec(),
            connect_ms: 0.1,
            first_byte_ms: 0.2,
            total_ms: 0.3,
        };
        assert!(response.is_success());
        assert_eq!(response.text(), "ok \u{fffd}");
        assert!(
            !Response {
                status: 302,
                ..response
            }
            .is_success()
        );
    }
}
