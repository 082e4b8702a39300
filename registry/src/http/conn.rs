//! What the server knows about the connection a request came on, for the gate and the
//! log line: the peer address (rate limits key on it) and, on a TLS listener, what the
//! handshake proved.

use std::net::SocketAddr;

/// One accepted connection, shared by every request on it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The verified client certificate's subject, when the listener asks for client
    /// certificates (mTLS) and the client presented one that chains to the client CA.
    pub client_subject: Option<String>,
}

impl Connection {
    /// A plain-HTTP connection from `peer`.
    pub fn plain(peer: SocketAddr) -> Connection {
        Connection {
            peer,
            tls: false,
            client_subject: None,
        }
    }
}
