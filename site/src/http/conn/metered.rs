//! Counting the bytes a connection receives, so the registry can tell a slow sender from a
//! fast one when it must reclaim a busy slot.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::registry::ConnState;

/// A connection's socket (under TLS, so handshake and record bytes count too: what the
/// peer actually sends) that adds every byte read to its [`ConnState`]. Writes pass
/// through.
#[derive(Debug)]
pub struct Metered<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> Metered<T> {
    /// Wraps `inner`, counting into `state`.
    pub fn new(inner: T, state: Arc<ConnState>) -> Metered<T> {
        Metered { inner, state }
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.state
                .add_received(buf.filled().len().saturating_sub(before));
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::conn::{ConnLimits, Listener, Registry};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_read_are_counted_on_the_connection() {
        let registry = Registry::new(ConnLimits::default());
        let ticket = registry
            .admit("127.0.0.1".parse().unwrap(), Listener::Https)
            .unwrap();
        let (mut near, far) = tokio::io::duplex(64);
        let mut metered = Metered::new(far, ticket.state().clone());
        near.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 16];
        let n = metered.read(&mut buf).await.unwrap();
        assert_eq!(n, 5);
        assert_eq!(ticket.state().bytes_received(), 5);
        metered.write_all(b"back").await.unwrap();
        assert_eq!(ticket.state().bytes_received(), 5, "writes are not counted");
    }
}
