//! A round-robin HTTP/1.1 reverse proxy on 127.0.0.1 in front of several valv nodes,
//! for multi_node.rs.
//!
//! - **Per request**, not per connection: clients keep their connection to the proxy,
//!   and each request on it goes to the next node in turn, on a fresh upstream
//!   connection of its own. So the POST, PATCH and PUT of one upload land on different
//!   nodes, as behind a load balancer that does not pin sessions.
//! - A node that refuses the connection is skipped for the next one (a dead node
//!   stays in the rotation: the refusal is what moves the request on).
//! - Bodies stream both ways (hyper's, frame by frame, with its backpressure); the
//!   request line and headers pass unchanged, `Host` included, except the hop-by-hop
//!   fields each side sets for itself.
//! - When a node breaks off a request (it died), the proxy closes the client's
//!   connection without an answer, as the node's own socket would have: the client
//!   sees a network error (which docker retries), not a made-up 502.
//! - It records which node served each request ([`RoundRobin::served`]), and can kill
//!   (SIGKILL, by the PID the test gave it: only processes the test started) the node
//!   serving a PATCH once a set number of that PATCH's body bytes have passed through
//!   ([`RoundRobin::kill_during_patch`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// A node behind the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Node {
    pub addr: SocketAddr,
    /// The node's process, killed by [`RoundRobin::kill_during_patch`].
    pub pid: u32,
}

/// One request the proxy handled.
#[derive(Debug, Clone)]
pub struct Served {
    /// Its place in the rotation (the order requests arrived in).
    pub seq: usize,
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// The node that took it (an index into the proxy's nodes); `None` when every node
    /// refused.
    pub node: Option<usize>,
    /// Nodes that refused the connection before one took it.
    pub refused: Vec<usize>,
    /// The node's status code; `None` when it broke off.
    pub status: Option<u16>,
    /// The response's `Location`.
    pub location: Option<String>,
    /// Why the request failed, when it did.
    pub error: Option<String>,
}

/// The kill [`RoundRobin::kill_during_patch`] did.
#[derive(Debug, Clone)]
pub struct Kill {
    pub node: usize,
    /// The PATCH it cut.
    pub target: String,
    /// Body bytes of that PATCH that had passed when the node was killed.
    pub after: u64,
}

#[derive(Debug)]
struct State {
    nodes: Vec<Node>,
    next: AtomicUsize,
    served: Mutex<Vec<Served>>,
    /// Armed kill: the body bytes of a PATCH after which its node is killed.
    kill_after: Mutex<Option<u64>>,
    killed: Mutex<Option<Kill>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking request task must not hide what the others recorded.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The proxy; it stops (and drops every connection) when dropped.
#[derive(Debug)]
pub struct RoundRobin {
    addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    /// Listens on 127.0.0.1 (a fresh port) in front of `nodes`. Needs a tokio runtime.
    pub async fn start(nodes: Vec<Node>) -> RoundRobin {
        assert!(!nodes.is_empty(), "a proxy needs nodes");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on 127.0.0.1");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(State {
            nodes,
            next: AtomicUsize::new(0),
            served: Mutex::new(Vec::new()),
            kill_after: Mutex::new(None),
            killed: Mutex::new(None),
        });
        let accept_state = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            // Dropped with the accept task, which aborts every connection task.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&accept_state);
                connections.spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| forward(Arc::clone(&state), req));
                    // A connection ends with an error when the client goes away or
                    // a node broke off a request: nothing to do about either here.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                // Reap finished connections so the set does not grow with them.
                while connections.try_join_next().is_some() {}
            }
        });
        RoundRobin {
            addr,
            state,
            accept,
        }
    }

    /// `127.0.0.1:PORT`, as docker wants it.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far, in the order they were answered (or failed).
    pub fn served(&self) -> Vec<Served> {
        lock(&self.state.served).clone()
    }

    /// Arms a one-time kill: the first PATCH whose body passes `after` bytes through
    /// the proxy has its node SIGKILLed there and then.
    pub fn kill_during_patch(&self, after: u64) {
        *lock(&self.state.kill_after) = Some(after);
    }

    /// The kill that happened, if one did.
    pub fn killed(&self) -> Option<Kill> {
        lock(&self.state.killed).clone()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Connection-scoped fields, which each hop sets for itself (RFC 9110 §7.6.1), and
/// the framing, which hyper chooses for the body it sends.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

impl State {
    fn record(&self, served: Served) {
        lock(&self.served).push(served);
    }

    /// Called as the body of a PATCH to `node` passes; kills the node once the armed
    /// number of bytes went through.
    fn body_passed(&self, node: usize, target: &str, passed: u64) {
        let mut armed = lock(&self.kill_after);
        if !armed.is_some_and(|after| passed >= after) {
            return;
        }
        *armed = None;
        let pid = self.nodes[node].pid;
        // SIGKILL, as a crash would; the node's process is the test's own child, not
        // yet reaped, so the PID is still its.
        let status = std::process::Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "kill -KILL {pid}: {status:?}"
        );
        eprintln!("proxy: killed node {node} (pid {pid}) after {passed} bytes of PATCH {target}");
        *lock(&self.killed) = Some(Kill {
            node,
            target: target.to_owned(),
            after: passed,
        });
    }
}

/// Sends `req` to the next node that accepts a connection, and relays its answer.
async fn forward(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, BoxError> {
    let seq = state.next.fetch_add(1, Ordering::SeqCst);
    let method = req.method().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    let mut served = Served {
        seq,
        method: method.clone(),
        target: target.clone(),
        node: None,
        refused: Vec::new(),
        status: None,
        location: None,
        error: None,
    };
    let n = state.nodes.len();
    let mut upstream = None;
    for k in 0..n {
        let i = (seq + k) % n;
        match TcpStream::connect(state.nodes[i].addr).await {
            Ok(stream) => {
                upstream = Some((i, stream));
                break;
            }
            Err(_) => served.refused.push(i),
        }
    }
    let Some((node, stream)) = upstream else {
        served.error = Some("every node refused the connection".to_owned());
        state.record(served);
        return Err("every node refused the connection".into());
    };
    served.node = Some(node);

    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => {
                served.error = Some(format!("handshake: {e}"));
                state.record(served);
                return Err(e.into());
            }
        };
    // Runs the upstream connection; it ends after this one exchange.
    tokio::spawn(connection);

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    let is_patch = parts.method == http::Method::PATCH;
    let (body_state, body_target) = (Arc::clone(&state), target.clone());
    let mut passed = 0u64;
    let body = body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            passed += data.len() as u64;
            if is_patch {
                body_state.body_passed(node, &body_target, passed);
            }
        }
        frame
    });

    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(mut resp) => {
            served.status = Some(resp.status().as_u16());
            served.location = resp
                .headers()
                .get(http::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            state.record(served);
            strip_hop_by_hop(resp.headers_mut());
            Ok(resp)
        }
        Err(e) => {
            served.error = Some(e.to_string());
            state.record(served);
            Err(e.into())
        }
    }
}
