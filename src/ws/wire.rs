//! The socket under tungstenite, with a side door for large frames.
//!
//! tungstenite copies every frame it writes into a buffer of its own, which
//! keeps its largest size for the life of the connection: one 60 KB
//! broadcast would leave 60 KB behind in every connection. So the writer
//! hands a large text frame to the [`Wire`] instead, once tungstenite's
//! buffer has been flushed: the frame goes out from the message's own bytes
//! (shared by every recipient, never copied per connection) and is freed
//! once written. Anything tungstenite writes afterwards (a pong, the close
//! frame) waits until the large frame is out, and the door waits while
//! tungstenite is halfway through writing a frame of its own (a pong the
//! reader answered while the socket was full), so frames never interleave.

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
fn poll_write_frame<S: AsyncWrite>(
    mut stream: Pin<&mut S>,
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
pub struct Wire<S = Stream> {
    stream: S,
    /// The client, whose `direct` slot is the side door.
    shared: Arc<Shared>,
    /// tungstenite's last write left part of its buffer unwritten, so the
    /// socket is inside one of its frames: the door waits. (tungstenite
    /// always writes its whole buffer, which holds whole frames, so a write
    /// taken entirely ends at a frame's end.)
    midframe: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    pub fn new(stream: S, shared: Arc<Shared>) -> Wire<S> {
        Wire {
            stream,
            shared,
            midframe: false,
        }
    }

    /// Writes the large frame waiting at the door, if one is and the
    /// socket is between two of tungstenite's frames.
    fn poll_door(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.midframe {
            return Poll::Ready(Ok(()));
        }
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

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Wire<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_door(cx))?;
        let n = ready!(Pin::new(&mut self.stream).poll_write(cx, buf))?;
        self.midframe = n < buf.len();
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_door(cx))?;
        let n = ready!(Pin::new(&mut self.stream).poll_write_vectored(cx, bufs))?;
        self.midframe = n < bufs.iter().map(|b| b.len()).sum();
        Poll::Ready(Ok(n))
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
    use crate::types::ClientId;
    use tokio::io::AsyncWriteExt;

    /// A socket that takes at most `room` bytes per write, as a full one does.
    struct Narrow {
        written: Vec<u8>,
        room: usize,
    }

    impl AsyncRead for Narrow {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Narrow {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.room);
            self.written.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The reader's pong goes out halfway (the socket is full) just as the
    /// writer hands a large frame to the door: the rest of the pong is
    /// written before the large frame, never the frame inside the pong.
    #[tokio::test]
    async fn the_door_waits_while_tungstenite_is_inside_a_frame() {
        let addr = "127.0.0.1:1".parse().unwrap();
        let shared = Arc::new(Shared::new(ClientId(1), addr, Default::default(), 8, 1 << 20));
        let narrow = Narrow {
            written: Vec::new(),
            room: 3,
        };
        let mut wire = Wire::new(narrow, shared.clone());
        let pong = [0x8a, 4, b'p', b'o', b'n', b'g'];
        assert_eq!(wire.write(&pong).await.unwrap(), 3, "half of the pong");
        let large = Bytes::from(vec![b'x'; 2000]);
        hand_over(&shared, large.clone());
        // tungstenite writes the rest of its buffer, then flushes.
        wire.stream.room = usize::MAX;
        wire.write_all(&pong[3..]).await.unwrap();
        wire.flush().await.unwrap();
        let (head, head_len) = head(large.len());
        let expected: Vec<u8> = [&pong[..], &head[..head_len], &large[..]].concat();
        assert_eq!(wire.stream.written, expected);
        assert!(
            shared.direct.lock().unwrap().is_none(),
            "the door is empty once written"
        );
    }

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
