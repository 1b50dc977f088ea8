//! A bounded capture of a run's stdout, stderr and host `log` lines. Writing past the
//! cap traps the guest with [`OutputLimitHit`], classified as `output_limit`.
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// The trap raised when a guest writes more output than its cap.
#[derive(Debug, thiserror::Error)]
#[error("output limit: the probe wrote more than {0} bytes of stdout/stderr/log")]
pub(crate) struct OutputLimitHit(pub usize);

#[derive(Debug, Default)]
struct Inner {
    buf: Vec<u8>,
    overflowed: bool,
}

/// Shared by stdout, stderr and the host `log` function of one run.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    cap: usize,
    inner: Arc<Mutex<Inner>>,
}

impl Capture {
    pub(crate) fn new(cap: usize) -> Self {
        Capture {
            cap,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// Appends what fits; returns an error if anything did not.
    pub(crate) fn push(&self, bytes: &[u8]) -> Result<(), OutputLimitHit> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.cap.saturating_sub(inner.buf.len());
        let take = room.min(bytes.len());
        inner.buf.extend_from_slice(&bytes[..take]);
        if take < bytes.len() {
            inner.overflowed = true;
            return Err(OutputLimitHit(self.cap));
        }
        Ok(())
    }

    pub(crate) fn overflowed(&self) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .overflowed
    }

    /// The captured text (lossy UTF-8), its tail kept if it must be shortened.
    pub(crate) fn text(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&inner.buf).into_owned()
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes)
            .map_err(|e| StreamError::Trap(wasmtime::Error::new(e)))
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always grant a permit: the write past the cap is the one that traps, so the
        // guest cannot spin on a full stream.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.push(buf) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(e) => Poll::Ready(Err(io::Error::other(e))),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_fits_and_flags_the_rest() {
        let c = Capture::new(8);
        c.push(b"hello").expect("fits");
        assert!(c.push(b"world").is_err());
        assert!(c.overflowed());
        assert_eq!(c.text(), "hellowor");
    }
}
