//! What a guest prints on its stdout and stderr (one buffer for both). The host keeps the last
//! `capacity` bytes — a panic message is the last thing a crashing plugin prints — and drops
//! the rest, counting it: printing never fails the guest, however much it prints.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

#[derive(Clone)]
pub struct GuestOutput {
    capacity: usize,
    kept: Arc<Mutex<Kept>>,
}

#[derive(Default)]
struct Kept {
    bytes: Vec<u8>,
    dropped: u64,
}

impl GuestOutput {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, kept: Arc::default() }
    }

    /// The last bytes printed, and how many earlier ones were dropped.
    pub fn tail(&self) -> (Vec<u8>, u64) {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        (kept.bytes.clone(), kept.dropped)
    }

    fn keep(&self, buf: &[u8]) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let buf = if buf.len() > self.capacity {
            kept.dropped += (buf.len() - self.capacity) as u64;
            &buf[buf.len() - self.capacity..]
        } else {
            buf
        };
        kept.bytes.extend_from_slice(buf);
        // Trim in halves so that a stream of small writes costs amortised O(1).
        if kept.bytes.len() > 2 * self.capacity {
            let excess = kept.bytes.len() - self.capacity;
            kept.bytes.drain(..excess);
            kept.dropped += excess as u64;
        }
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.keep(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_and_counts_the_rest() {
        let out = GuestOutput::new(8);
        for chunk in [&b"0123"[..], b"4567", b"89ab", b"cdefghijklmnop"] {
            out.keep(chunk);
        }
        let (bytes, dropped) = out.tail();
        assert!(bytes.ends_with(b"ijklmnop"), "{bytes:?}");
        assert_eq!(dropped as usize + bytes.len(), 26);
    }
}
