//! What rnmt-serve does with a connection it cannot give a slot (the connection cap, or the
//! per-client cap, is reached), and the per-client count.
//!
//! - **Per-client cap**: one client address holds at most
//!   [`super::conn::ConnLimits::max_client_connections`] of the slots, so one client that
//!   never reads (or trickles its heads) cannot take them all. Behind a reverse proxy every
//!   connection comes from the proxy: raise it to `--max-connections` there.
//! - **The overflow lane**: a connection beyond a cap is not served, but it is not dropped
//!   blind either: up to [`OVERFLOW_LANE`] of them at a time get [`OVERFLOW_WAIT`] to send a
//!   request head (at most [`OVERFLOW_HEAD_BYTES`]); `GET /health` is answered 200
//!   `{"status": "ok"}` (so a health check passes while the server is full), anything else
//!   503 with a JSON error, and the connection is closed. More than that are closed at once.
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;

/// Connections beyond the caps handled at once.
pub const OVERFLOW_LANE: usize = 8;
/// Time an overflow connection has to send its request head.
pub const OVERFLOW_WAIT: Duration = Duration::from_secs(1);
/// Most bytes read from an overflow connection.
pub const OVERFLOW_HEAD_BYTES: usize = 1024;

/// Open connections per client address.
#[derive(Clone, Default)]
pub struct Clients(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One counted connection of a client; uncounted when dropped.
pub struct ClientSlot {
    clients: Clients,
    ip: IpAddr,
}

impl Clients {
    /// Counts a connection of `ip` when it holds fewer than `max`; `None` otherwise.
    pub fn try_add(&self, ip: IpAddr, max: usize) -> Option<ClientSlot> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut map = self.clients.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// The answer to the request head `head` (possibly partial) of an overflow connection.
pub fn answer(head: &[u8]) -> Vec<u8> {
    let health = head.starts_with(b"GET /health ") || head.starts_with(b"GET /health?");
    let (status, body) = if health {
        ("200 OK", r#"{"status":"ok"}"#.to_string())
    } else {
        (
            "503 Service Unavailable",
            r#"{"error":"the server is at its connection limit; retry later"}"#.to_string(),
        )
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves one overflow connection (see the module docs).
pub async fn serve_overflow(stream: TcpStream) {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(OVERFLOW_WAIT, async {
        while head.len() < OVERFLOW_HEAD_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if stream.readable().await.is_err() {
                return false;
            }
            match stream.try_read(&mut buf) {
                Ok(0) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return false,
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let reply = answer(&head);
    let _ = tokio::time::timeout(OVERFLOW_WAIT, async {
        let mut at = 0;
        while at < reply.len() {
            if stream.writable().await.is_err() {
                return;
            }
            match stream.try_write(&reply[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    })
    .await;
    // Dropped: closed.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_answered_and_the_rest_refused() {
        let ok = String::from_utf8(answer(b"GET /health HTTP/1.1\r\n\r\n")).unwrap();
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with(r#"{"status":"ok"}"#));
        let no = String::from_utf8(answer(b"POST /translator/translate HTTP/1.1\r\n")).unwrap();
        assert!(
            no.starts_with("HTTP/1.1 503 ") && no.contains(r#""error":"#),
            "{no}"
        );
        let clients = Clients::default();
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let a = clients.try_add(ip, 2).unwrap();
        let _b = clients.try_add(ip, 2).unwrap();
        assert!(clients.try_add(ip, 2).is_none());
        drop(a);
        assert!(clients.try_add(ip, 2).is_some());
    }
}
