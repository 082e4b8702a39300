//! Who may hold a connection: at most `server.max_connections` at once, and at most
//! `server.max_connections_per_client` from one client, so that one client opening
//! connections and leaving them idle cannot take every slot.
//!
//! A client is an IPv4 address, or an IPv6 /64 (the block one host is usually given,
//! and can pick any address in). The accept loop first waits for a free slot (beyond
//! the limit, clients wait in the kernel's backlog, as before), then asks
//! [`Admission::admit`]; a client at its own limit is answered `429` and the
//! connection closed at once, which frees the slot for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One client, as the per-client limit counts them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(v4.to_bits()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(v4.to_bits()),
                None => ClientKey::V6((v6.to_bits() >> 64) as u64),
            },
        }
    }
}

/// The connection slots and the per-client counts.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    per_client: usize,
    clients: Mutex<HashMap<ClientKey, usize>>,
}

/// A connection's hold on its slot and its client's count; released when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    key: Option<ClientKey>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut clients = self.admission.lock();
        if let Some(n) = clients.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&key);
            }
        }
    }
}

impl Admission {
    /// `per_client = 0`: no per-client limit.
    pub fn new(max_connections: usize, per_client: usize) -> Arc<Admission> {
        Arc::new(Admission {
            slots: Arc::new(Semaphore::new(max_connections)),
            per_client,
            clients: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientKey, usize>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a free connection slot.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed")
    }

    /// Admits a connection from `peer` into `slot`, or refuses it (`None`, the slot
    /// freed) when that client already holds its limit.
    pub fn admit(self: &Arc<Self>, slot: OwnedSemaphorePermit, peer: IpAddr) -> Option<Ticket> {
        if self.per_client == 0 {
            return Some(Ticket {
                admission: self.clone(),
                key: None,
                _slot: slot,
            });
        }
        let key = ClientKey::of(peer);
        let mut clients = self.lock();
        let held = clients.entry(key).or_insert(0);
        if *held >= self.per_client {
            return None;
        }
        *held += 1;
        drop(clients);
        Some(Ticket {
            admission: self.clone(),
            key: Some(key),
            _slot: slot,
        })
    }

    /// Connections `peer`'s client holds now.
    #[cfg(test)]
    fn held(&self, peer: IpAddr) -> usize {
        self.lock().get(&ClientKey::of(peer)).copied().unwrap_or(0)
    }
}

/// The answer to a connection refused for its client's limit, on a plain listener: a
/// complete HTTP/1.1 response, written without waiting (it fits any socket buffer) and
/// without reading the request, then the connection is closed. A TLS connection is
/// closed without one (there is no session to send it in).
pub const REFUSED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 90\r\n\
\r\n\
{\"errors\":[{\"code\":\"TOOMANYREQUESTS\",\"message\":\"too many connections from this client\"}]}\n";

/// Refuses `stream`: [`REFUSED`] on a plain listener, if the socket takes it at once.
pub fn refuse(stream: TcpStream, plain: bool) {
    if plain {
        // Best effort and never blocking: a client that does not read gets the close.
        let _ = stream.try_write(REFUSED);
    }
    drop(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn the_refusal_is_a_whole_response() {
        let text = std::str::from_utf8(REFUSED).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["errors"][0]["code"], "TOOMANYREQUESTS");
    }

    #[test]
    fn ipv6_clients_are_their_64_and_mapped_v4_is_v4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().expect("v6");
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().expect("v6");
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().expect("v6");
        assert_eq!(ClientKey::of(a.into()), ClientKey::of(b.into()));
        assert_ne!(ClientKey::of(a.into()), ClientKey::of(c.into()));
        let mapped: Ipv6Addr = "::ffff:127.0.0.1".parse().expect("v6");
        assert_eq!(ClientKey::of(mapped.into()), ClientKey::of(v4(1)));
    }

    #[tokio::test]
    async fn a_client_at_its_limit_is_refused_and_others_are_not() {
        let admission = Admission::new(10, 2);
        let a1 = admission
            .admit(admission.slot().await, v4(1))
            .expect("first");
        let _a2 = admission
            .admit(admission.slot().await, v4(1))
            .expect("second");
        assert!(admission.admit(admission.slot().await, v4(1)).is_none());
        // The refused connection's slot came back: 8 free of 10.
        assert_eq!(admission.slots.available_permits(), 8);
        let _b = admission
            .admit(admission.slot().await, v4(2))
            .expect("another client");
        drop(a1);
        assert_eq!(admission.held(v4(1)), 1);
        let _a3 = admission
            .admit(admission.slot().await, v4(1))
            .expect("room again");
        assert_eq!(admission.held(v4(1)), 2);
    }

    #[tokio::test]
    async fn no_per_client_limit_when_zero() {
        let admission = Admission::new(3, 0);
        let tickets: Vec<Ticket> = futures::future::join_all((0..3).map(|_| async {
            admission
                .admit(admission.slot().await, v4(1))
                .expect("admitted")
        }))
        .await;
        assert_eq!(tickets.len(), 3);
        assert_eq!(admission.slots.available_permits(), 0);
        assert_eq!(admission.held(v4(1)), 0, "not counted per client");
    }
}
