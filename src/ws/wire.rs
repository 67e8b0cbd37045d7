//! The socket under tungstenite, with a side door for large frames.
//!
//! tungstenite copies every frame it writes into a buffer of its own, which
//! keeps its largest size for the life of the connection: one 60 KB
//! broadcast would leave 60 KB behind in every connection. So the writer
//! hands a large text frame to the [`Wire`] instead, once tungstenite's
//! buffer has been flushed: the frame goes out from the message's own bytes
//! (shared by every recipient, never copied per connection) and is freed
//! once written. Anything tungstenite writes afterwards (a pong, the close
//! frame) waits until the large frame is out, so frames never interleave.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Bytes;

use super::tls::Stream;
use crate::hub::Shared;

/// Frames larger than this go through the side door.
pub const LARGE_FRAME: usize = 1024;

/// The head of a server text frame (unmasked, final) of `len` bytes, and
/// its length.
fn head(len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = 0x80 | 0x1; // FIN, opcode text
    let head_len = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, head_len)
}

/// Writes what is left of the frame holding `body`, `done` bytes of which
/// (head included) are written; `Ready(Ok)` once all of it is.
fn poll_write_frame(
    mut stream: Pin<&mut Stream>,
    cx: &mut Context<'_>,
    body: &Bytes,
    done: &mut usize,
) -> Poll<io::Result<()>> {
    let (head, head_len) = head(body.len());
    while *done < head_len + body.len() {
        let slices = [
            io::IoSlice::new(&head[(*done).min(head_len)..head_len]),
            io::IoSlice::new(&body[done.saturating_sub(head_len)..]),
        ];
        let n = ready!(stream.as_mut().poll_write_vectored(cx, &slices))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        *done += n;
    }
    Poll::Ready(Ok(()))
}

/// The connection's socket, as tungstenite sees it.
pub struct Wire {
    stream: Stream,
    /// The client, whose `direct` slot is the side door.
    shared: Arc<Shared>,
}

impl Wire {
    pub fn new(stream: Stream, shared: Arc<Shared>) -> Wire {
        Wire { stream, shared }
    }

    /// Writes the large frame waiting at the door, if one is.
    fn poll_door(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut door = self.shared.direct.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((body, done)) = door.as_mut() {
            ready!(poll_write_frame(Pin::new(&mut self.stream), cx, body, done))?;
            *door = None;
        }
        Poll::Ready(Ok(()))
    }
}

/// Hands a large text frame to the door: the next write or flush of the
/// socket sends it, before anything tungstenite writes after it. The door
/// must be empty (flush the sink first).
pub fn hand_over(shared: &Shared, text: Bytes) {
    *shared.direct.lock().unwrap_or_else(|e| e.into_inner()) = Some((text, 0));
}

impl AsyncRead for Wire {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wire {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_door(cx))?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_door(cx))?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_door(cx))?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_door(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_heads_encode_each_length_form() {
        for (len, expected) in [
            (5usize, vec![0x81, 5]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65535, vec![0x81, 126, 0xff, 0xff]),
            (65536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let (head, head_len) = head(len);
            assert_eq!(&head[..head_len], &expected[..], "{len}");
        }
    }
}
