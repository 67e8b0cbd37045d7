//! A WebSocket client that writes frames byte by byte, for what no
//! well-behaved library will send: reserved bits, bad opcodes, unmasked or
//! oversized frames, invalid UTF-8. It also tells how the socket ended: a
//! clean FIN, or a reset.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::WAIT;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;

pub struct RawClient {
    pub stream: TcpStream,
    /// Bytes read past the last frame returned.
    buf: Vec<u8>,
    pub id: String,
}

/// How a socket ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The peer closed cleanly (FIN).
    Fin,
    /// The peer reset the connection.
    Reset,
}

impl RawClient {
    /// Connects, upgrades and reads the welcome frame.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut client = RawClient {
            stream,
            buf: Vec::new(),
            id: String::new(),
        };
        let head_end = loop {
            if let Some(i) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            client.fill().await.expect("response head");
        };
        let head = String::from_utf8_lossy(&client.buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        client.buf.drain(..head_end);
        let (opcode, payload) = client.frame().await.expect("welcome");
        assert_eq!(opcode, TEXT);
        let welcome: Value = serde_json::from_slice(&payload).unwrap();
        client.id = welcome["client_id"].as_str().unwrap().to_string();
        client
    }

    async fn fill(&mut self) -> Result<usize, End> {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("read in time")
        {
            Ok(0) => Err(End::Fin),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Err(End::Reset),
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// One server frame (unmasked, so servers' frames only): (opcode, payload).
    pub async fn frame(&mut self) -> Result<(u8, Vec<u8>), End> {
        loop {
            if self.buf.len() >= 2 {
                let (len, offset) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4),
                    127 if self.buf.len() >= 10 => {
                        (u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= offset + len {
                    let opcode = self.buf[0] & 0x0f;
                    let payload = self.buf[offset..offset + len].to_vec();
                    self.buf.drain(..offset + len);
                    return Ok((opcode, payload));
                }
            }
            self.fill().await?;
        }
    }

    /// Reads frames until a close frame: (code, reason). Panics if the
    /// socket ends first.
    pub async fn close_frame(&mut self) -> (u16, String) {
        loop {
            match self.frame().await {
                Ok((CLOSE, payload)) => {
                    assert!(payload.len() >= 2, "a close frame with a code");
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    return (code, String::from_utf8_lossy(&payload[2..]).to_string());
                }
                Ok(_) => continue,
                Err(end) => panic!("the socket ended ({end:?}) without a close frame"),
            }
        }
    }

    /// Answers the server's close, reads until the socket ends, and (as a
    /// browser does) closes its own side.
    pub async fn finish(&mut self) -> End {
        let _ = self.send(true, 0, CLOSE, true, &1000u16.to_be_bytes()).await;
        loop {
            match self.frame().await {
                Ok(_) => continue,
                Err(end) => {
                    let _ = self.stream.shutdown().await;
                    return end;
                }
            }
        }
    }

    /// Writes one frame; `rsv` is the three reserved bits (0-7).
    pub async fn send(&mut self, fin: bool, rsv: u8, opcode: u8, masked: bool, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            let key = [0x12, 0x34, 0x56, 0x78];
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        self.stream.write_all(&frame).await
    }
}
