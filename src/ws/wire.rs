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
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Bytes;

use super::tls::Stream;

/// Frames larger than this go through the side door.
pub const LARGE_FRAME: usize = 1024;

/// The writer's end of the side door.
pub type Door = Arc<Mutex<Option<Pending>>>;

/// A server frame (unmasked, final) being written.
pub struct Pending {
    head: [u8; 10],
    head_len: u8,
    body: Bytes,
    /// Bytes of head and body written so far.
    done: usize,
}

impl Pending {
    /// A text frame holding `body`.
    pub fn text(body: Bytes) -> Pending {
        let mut head = [0u8; 10];
        head[0] = 0x80 | 0x1; // FIN, opcode text
        let len = body.len();
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
        Pending {
            head,
            head_len,
            body,
            done: 0,
        }
    }

    fn len(&self) -> usize {
        self.head_len as usize + self.body.len()
    }

    /// Writes what is left; `Ready(Ok)` once all of it is written.
    fn poll_write_to(&mut self, stream: Pin<&mut Stream>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stream = stream;
        while self.done < self.len() {
            let head = &self.head[self.done.min(self.head_len as usize)..self.head_len as usize];
            let body = &self.body[self.done.saturating_sub(self.head_len as usize)..];
            let slices = [io::IoSlice::new(head), io::IoSlice::new(body)];
            let n = ready!(stream.as_mut().poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.done += n;
        }
        Poll::Ready(Ok(()))
    }
}

/// The connection's socket, as tungstenite sees it.
pub struct Wire {
    stream: Stream,
    door: Door,
}

impl Wire {
    /// The socket and the writer's end of its side door.
    pub fn new(stream: Stream) -> (Wire, Door) {
        let door = Door::default();
        (
            Wire {
                stream,
                door: door.clone(),
            },
            door,
        )
    }

    /// Writes the large frame waiting at the door, if one is.
    fn poll_door(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut door = self.door.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pending) = door.as_mut() {
            ready!(pending.poll_write_to(Pin::new(&mut self.stream), cx))?;
            *door = None;
        }
        Poll::Ready(Ok(()))
    }
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
        for (len, head) in [
            (5usize, vec![0x81, 5]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65535, vec![0x81, 126, 0xff, 0xff]),
            (65536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let pending = Pending::text(Bytes::from(vec![b'x'; len]));
            assert_eq!(&pending.head[..pending.head_len as usize], &head[..], "{len}");
            assert_eq!(pending.len(), head.len() + len);
        }
    }
}
