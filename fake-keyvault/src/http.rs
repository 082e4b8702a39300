//! The listener, the router and the handlers. Handlers parse, ask [`Shared`] one
//! thing, and build a response; all Key Vault rules live in `state`.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::state::{self, AuthOutcome, FaultDecision, Material, OpKind, Shared, WrapAlg};
use crate::{
    check_name, Error, IdentitySpec, KeyKind, Outage, Permission, TlsIdentity, ValidityEnforcement,
    JWT_BEARER_ASSERTION_TYPE, VAULT_RESOURCE, VAULT_SCOPE,
};

/// Bodies we read are small JSON or form documents; anything bigger is refused.
const MAX_BODY: usize = 64 * 1024;
/// Key Vault's default and maximum page size for list calls.
const MAX_PAGE: usize = 25;

type Resp = Response<Full<Bytes>>;

/// Accepts connections until `stopped` fires. Connections live in a `JoinSet`
/// owned by this task, so stopping or aborting it ends them all (hung ones too).
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    conns.spawn(serve_connection(stream, tls.clone(), shared.clone()));
                }
                Err(e) => {
                    // E.g. EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
        }
    }
    conns.shutdown().await;
}

async fn serve_connection(stream: TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    let svc = service_fn(move |req| handle(shared.clone(), req));
    let served = match tls {
        None => {
            http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
        }
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls) => {
                http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await
            }
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    if let Err(e) = served {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The TLS acceptor for `identity` (TLS 1.2 and 1.3, *ring*, HTTP/1.1 only).
///
/// Fails with `BadRequest` when the PEM does not hold a certificate chain and a
/// matching key.
pub(crate) fn tls_acceptor(identity: &TlsIdentity) -> Result<TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| Error::BadRequest(format!("{what}: {e}"));
    let certs = CertificateDer::pem_slice_iter(identity.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate chain", &e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| bad("private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate and key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Every route the fake serves.
#[derive(Debug)]
enum Route {
    GetKey {
        name: String,
        version: Option<String>,
    },
    ListVersions {
        name: String,
    },
    Wrap {
        name: String,
        version: Option<String>,
        unwrap: bool,
    },
    ClientToken {
        tenant: String,
    },
    Imds,
    Control(Control),
    /// A vault-looking path that is malformed, or a method it does not take.
    BadVault(String),
    Unknown,
}

#[derive(Debug)]
enum Control {
    CreateKey,
    AddVersion(String),
    PatchKey(String, Option<String>),
    DeleteKey(String),
    RecoverKey(String),
    AddIdentity,
    RemoveIdentity(String),
    Grant(String, bool),
    IssueToken(String),
    ExpireTokens,
    TokenLifetime,
    Throttle,
    Outage,
    Latency,
    CorruptUnwrap,
    Counters,
    ResetCounters,
}

fn route(method: &Method, path: &str) -> Route {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match segs.as_slice() {
        ["keys", rest @ ..] => vault_route(method, rest),
        [tenant, "oauth2", "v2.0", "token"] if post => Route::ClientToken {
            tenant: (*tenant).to_owned(),
        },
        ["metadata", "identity", "oauth2", "token"] if get => Route::Imds,
        ["_fake", rest @ ..] => control_route(method, rest),
        _ => Route::Unknown,
    }
}

fn vault_route(method: &Method, rest: &[&str]) -> Route {
    let bad = |m: &str| Route::BadVault(m.to_owned());
    let name_ok = |n: &str| state::is_valid_key_name(n);
    let is_get = method == Method::GET;
    let is_post = method == Method::POST;
    let op = |s: &str| match s.to_ascii_lowercase().as_str() {
        "wrapkey" => Some(false),
        "unwrapkey" => Some(true),
        _ => None,
    };
    match rest {
        [name] if name_ok(name) => {
            if is_get {
                Route::GetKey {
                    name: (*name).into(),
                    version: None,
                }
            } else {
                bad("The method is not allowed on this resource.")
            }
        }
        [name, "versions"] if name_ok(name) && is_get => Route::ListVersions {
            name: (*name).into(),
        },
        [name, last] if name_ok(name) && op(last).is_some() => match (is_post, op(last)) {
            (true, Some(unwrap)) => Route::Wrap {
                name: (*name).into(),
                version: None,
                unwrap,
            },
            _ => bad("The method is not allowed on this resource."),
        },
        [name, version] if name_ok(name) && !version.is_empty() => {
            if is_get {
                Route::GetKey {
                    name: (*name).into(),
                    version: Some((*version).into()),
                }
            } else {
                bad("The method is not allowed on this resource.")
            }
        }
        [name, version, last] if name_ok(name) && !version.is_empty() && op(last).is_some() => {
            match (is_post, op(last)) {
                (true, Some(unwrap)) => Route::Wrap {
                    name: (*name).into(),
                    version: Some((*version).into()),
                    unwrap,
                },
                _ => bad("The method is not allowed on this resource."),
            }
        }
        _ => bad("The request URI is not valid: key names must match ^[0-9a-zA-Z-]+$."),
    }
}

fn control_route(method: &Method, rest: &[&str]) -> Route {
    use Control as C;
    let m = method.clone();
    let s = |x: &str| x.to_owned();
    let c = match (m, rest) {
        (Method::POST, ["keys"]) => C::CreateKey,
        (Method::POST, ["keys", n, "versions"]) => C::AddVersion(s(n)),
        (Method::POST, ["keys", n, "recover"]) => C::RecoverKey(s(n)),
        (Method::PATCH, ["keys", n]) => C::PatchKey(s(n), None),
        (Method::PATCH, ["keys", n, v]) => C::PatchKey(s(n), Some(s(v))),
        (Method::DELETE, ["keys", n]) => C::DeleteKey(s(n)),
        (Method::POST, ["identities"]) => C::AddIdentity,
        (Method::DELETE, ["identities", o]) => C::RemoveIdentity(s(o)),
        (Method::POST, ["identities", o, "grant"]) => C::Grant(s(o), true),
        (Method::POST, ["identities", o, "revoke"]) => C::Grant(s(o), false),
        (Method::POST, ["identities", o, "token"]) => C::IssueToken(s(o)),
        (Method::POST, ["tokens", "expire"]) => C::ExpireTokens,
        (Method::PUT, ["tokens", "lifetime"]) => C::TokenLifetime,
        (Method::POST, ["faults", "throttle"]) => C::Throttle,
        (Method::PUT, ["faults", "outage"]) => C::Outage,
        (Method::PUT, ["faults", "latency"]) => C::Latency,
        (Method::PUT, ["faults", "corrupt-unwrap"]) => C::CorruptUnwrap,
        (Method::GET, ["counters"]) => C::Counters,
        (Method::DELETE, ["counters"]) => C::ResetCounters,
        _ => return Route::Unknown,
    };
    Route::Control(c)
}

/// What every handler needs from the request, parsed once.
struct Ctx {
    shared: Arc<Shared>,
    /// `http://<Host>`: base of `kid`s, `nextLink`s and the auth authority.
    base: String,
    query: Vec<(String, String)>,
    headers: http::HeaderMap,
    body: Result<Bytes, ()>,
}

impl Ctx {
    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let (parts, body) = req.into_parts();
    let route = route(&parts.method, parts.uri.path());
    // Path only: queries may carry client ids, and bodies secrets and key bytes.
    tracing::debug!(method = %parts.method, path = parts.uri.path(), "request");
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(()),
    };
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_owned);
    let base = match host {
        Some(h) => format!("http://{h}"),
        None => format!("http://{}", shared.config.addr),
    };
    let query = parts
        .uri
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let ctx = Ctx {
        shared,
        base,
        query,
        headers: parts.headers,
        body,
    };
    Ok(match route {
        Route::GetKey { name, version } => {
            vault(ctx, OpKind::Get, |c, id| {
                get_key(c, id, &name, version.as_deref())
            })
            .await
        }
        Route::ListVersions { name } => {
            vault(ctx, OpKind::List, |c, id| list_versions(c, id, &name)).await
        }
        Route::Wrap {
            name,
            version,
            unwrap,
        } => {
            let kind = if unwrap {
                OpKind::UnwrapKey
            } else {
                OpKind::WrapKey
            };
            match vault_prelude(&ctx, kind).await {
                Ok(identity) => {
                    wrap_or_unwrap(&ctx, &identity, &name, version.as_deref(), unwrap).await
                }
                Err(resp) => resp,
            }
        }
        Route::ClientToken { tenant } => {
            token_prelude(&ctx).await;
            client_token(&ctx, &tenant)
        }
        Route::Imds => {
            token_prelude(&ctx).await;
            imds_token(&ctx)
        }
        Route::Control(c) => control(&ctx, c).await,
        Route::BadVault(msg) => kv_error(StatusCode::BAD_REQUEST, "BadParameter", &msg, None),
        Route::Unknown => kv_error(
            StatusCode::NOT_FOUND,
            "NotFound",
            "No route matches this request.",
            None,
        ),
    })
}

/// Runs the common vault checks, then the synchronous handler `f`.
async fn vault(ctx: Ctx, kind: OpKind, f: impl FnOnce(&Ctx, &state::Identity) -> Resp) -> Resp {
    match vault_prelude(&ctx, kind).await {
        Ok(identity) => f(&ctx, &identity),
        Err(resp) => resp,
    }
}

/// Counter, latency, faults, api-version, token, permission: in that order.
async fn vault_prelude(ctx: &Ctx, kind: OpKind) -> Result<state::Identity, Resp> {
    let shared = &ctx.shared;
    shared.count(kind);
    let latency = shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match shared.fault_decision() {
        FaultDecision::Proceed => {}
        FaultDecision::Throttled { retry_after_secs } => {
            let mut r = kv_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                "Request was not processed because too many requests were received. Reason: VaultRequestTypeLimitReached",
                None,
            );
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return Err(r);
        }
        FaultDecision::Unavailable => return Err(unavailable()),
        FaultDecision::Hang => {
            let mut rx = shared.outage.subscribe();
            // Returns when the mode changes; if the sender is gone the server is stopping.
            let _ = rx.wait_for(|o| *o != Outage::Hang).await;
            return Err(unavailable());
        }
    }
    if ctx.param("api-version").is_none_or(str::is_empty) {
        return Err(kv_error(
            StatusCode::BAD_REQUEST,
            "BadParameter",
            "The request is missing the required api-version query parameter.",
            None,
        ));
    }
    let token = ctx
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    let identity = match token.map(|t| shared.authenticate(t)) {
        Some(AuthOutcome::Ok(i)) => i,
        Some(AuthOutcome::Unauthorized) | None => return Err(unauthorized(ctx)),
    };
    let perm = match kind {
        OpKind::Get => Permission::Get,
        OpKind::List => Permission::List,
        OpKind::WrapKey => Permission::WrapKey,
        OpKind::UnwrapKey => Permission::UnwrapKey,
        OpKind::Token => return Ok(identity),
    };
    if !identity.permissions.contains(&perm) {
        let msg = format!(
            "The user, group or application 'appid={};oid={};iss=https://sts.windows.net/{}/' does not have keys {} permission on key vault '{};location=fake'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
            identity.spec.client_id,
            identity.spec.object_id,
            shared.config.tenant_id,
            perm.as_str(),
            shared.config.vault_name,
        );
        return Err(kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &msg,
            Some("ForbiddenByPolicy"),
        ));
    }
    Ok(identity)
}

fn unavailable() -> Resp {
    kv_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "The service is temporarily unavailable. Please retry later.",
        None,
    )
}

fn unauthorized(ctx: &Ctx) -> Resp {
    let mut r = kv_error(
        StatusCode::UNAUTHORIZED,
        "Unauthorized",
        "AKV10000: Request is missing a Bearer or PoP token.",
        None,
    );
    let challenge = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{VAULT_RESOURCE}\"",
        ctx.base, ctx.shared.config.tenant_id
    );
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        r.headers_mut().insert(WWW_AUTHENTICATE, v);
    }
    r
}

fn key_not_found(name: &str, version: Option<&str>) -> Resp {
    let id = match version {
        Some(v) => format!("{name}/{v}"),
        None => name.to_owned(),
    };
    kv_error(
        StatusCode::NOT_FOUND,
        "KeyNotFound",
        &format!("A key with (name/id) {id} was not found in this key vault. If you recently deleted this key you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"),
        None,
    )
}

fn kid(ctx: &Ctx, name: &str, version: &str) -> String {
    format!("{}/keys/{name}/{version}", ctx.base)
}

fn get_key(ctx: &Ctx, _id: &state::Identity, name: &str, version: Option<&str>) -> Resp {
    let Some(v) = ctx.shared.version(name, version) else {
        return key_not_found(name, version);
    };
    if !v.enabled {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled key.",
            Some("KeyDisabled"),
        );
    }
    let mut jwk = v.material.public_jwk();
    jwk.insert("kid".into(), kid(ctx, name, &v.id).into());
    json_resp(
        StatusCode::OK,
        &json!({"key": jwk, "attributes": v.attributes_json(), "tags": {}}),
    )
}

fn list_versions(ctx: &Ctx, _id: &state::Identity, name: &str) -> Resp {
    let page = match ctx.param("maxresults") {
        None => MAX_PAGE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "maxresults must be an integer between 1 and 25.",
                    None,
                )
            }
        },
    };
    let start = match ctx.param("$skiptoken") {
        None => 0,
        Some(t) => match crate::b64_decode(t)
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.strip_prefix("offset:")
                    .and_then(|n| n.parse::<usize>().ok())
            }) {
            Some(n) => n,
            None => {
                return kv_error(
                    StatusCode::BAD_REQUEST,
                    "BadParameter",
                    "The $skiptoken is not valid.",
                    None,
                )
            }
        },
    };
    let Some(versions) = ctx.shared.all_versions(name) else {
        return key_not_found(name, None);
    };
    let value: Vec<Value> = versions
        .iter()
        .skip(start)
        .take(page)
        .map(|v| json!({"kid": kid(ctx, name, &v.id), "attributes": v.attributes_json(), "tags": {}}))
        .collect();
    let next = start + page;
    let next_link = if next < versions.len() {
        let token = crate::b64(format!("offset:{next}").as_bytes());
        let api = ctx.param("api-version").unwrap_or_default();
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("api-version", api)
            .append_pair("$skiptoken", &token)
            .append_pair("maxresults", &page.to_string())
            .finish();
        Value::String(format!("{}/keys/{name}/versions?{q}", ctx.base))
    } else {
        Value::Null
    };
    json_resp(
        StatusCode::OK,
        &json!({"value": value, "nextLink": next_link}),
    )
}

#[derive(Deserialize)]
struct WrapBody {
    alg: Option<String>,
    value: Option<String>,
}

async fn wrap_or_unwrap(
    ctx: &Ctx,
    _id: &state::Identity,
    name: &str,
    version: Option<&str>,
    unwrap: bool,
) -> Resp {
    let op = if unwrap { "unwrapKey" } else { "wrapKey" };
    let bad = |m: &str| kv_error(StatusCode::BAD_REQUEST, "BadParameter", m, None);
    let Ok(body) = &ctx.body else {
        return bad("The request body is too large.");
    };
    let Ok(parsed) = serde_json::from_slice::<WrapBody>(body) else {
        return bad("The request body is not valid JSON of the form {\"alg\":…,\"value\":…}.");
    };
    let alg = match parsed.alg.as_deref() {
        None => return bad("Property 'alg' is required."),
        Some(a) => match WrapAlg::parse(a) {
            Some(alg) => alg,
            None => {
                return bad(&format!(
                    "Invalid algorithm '{}' for {op}: this vault only supports RSA-OAEP-256 and RSA-OAEP.",
                    a.chars().take(32).collect::<String>()
                ))
            }
        },
    };
    let Some(bytes) = parsed.value.as_deref().and_then(crate::b64_decode) else {
        return bad("Property 'value' is required and must be base64url.");
    };
    let Some(v) = ctx.shared.version_for_crypto(name, version) else {
        return key_not_found(name, version);
    };
    let Material::Rsa(key) = &v.material else {
        return bad(&format!("Key type EC does not support the {op} operation."));
    };
    if unwrap && !v.enabled {
        return kv_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation unwrapKey is not allowed on a disabled key.",
            Some("KeyDisabled"),
        );
    }
    let enforce_window = !unwrap || ctx.shared.validity() == ValidityEnforcement::Strict;
    if enforce_window {
        if let Some((inner, msg)) = v.window_violation(op, state::now_secs()) {
            return kv_error(StatusCode::FORBIDDEN, "Forbidden", &msg, Some(inner));
        }
    }
    let key = key.clone();
    let corrupt = unwrap && ctx.shared.corrupt_unwrap();
    let result = tokio::task::spawn_blocking(move || {
        if unwrap {
            state::rsa_unwrap(&key, alg, &bytes).map_err(|()| "Decryption failed.".to_owned())
        } else {
            state::rsa_wrap(&key, alg, &bytes)
        }
    })
    .await;
    match result {
        Ok(Ok(mut out)) => {
            if corrupt {
                // Same length, other bytes: what a caller must catch by comparing.
                out.iter_mut().for_each(|b| *b ^= 0x5a);
            }
            json_resp(
                StatusCode::OK,
                &json!({"kid": kid(ctx, name, &v.id), "value": crate::b64(&out)}),
            )
        }
        Ok(Err(msg)) => bad(&msg),
        Err(_) => kv_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "The crypto task failed.",
            None,
        ),
    }
}

// ----- tokens -----

async fn token_prelude(ctx: &Ctx) {
    ctx.shared.count(OpKind::Token);
    let latency = ctx.shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Resp {
    json_resp(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}"),
            "error_codes": [code],
        }),
    )
}

fn client_token(ctx: &Ctx, tenant: &str) -> Resp {
    let cfg = &ctx.shared.config;
    if tenant != cfg.tenant_id {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            90002,
            "Tenant not found.",
        );
    }
    let is_form = ctx
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let Ok(body) = &ctx.body else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body is too large.",
        );
    };
    if !is_form {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let field = |n: &str| form.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    if field("grant_type") != Some("client_credentials") {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; only client_credentials is served.",
        );
    }
    let Some(client_id) = field("client_id") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the 'client_id' parameter.",
        );
    };
    if field("scope") != Some(VAULT_SCOPE) {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            1002012,
            "The provided value for scope is not valid; this fake only issues https://vault.azure.net/.default.",
        );
    }
    let Some(identity) = ctx.shared.identity_by_client_id(client_id) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            700016,
            "Application with the given identifier was not found in the directory.",
        );
    };
    let authenticated = match (
        field("client_secret"),
        field("client_assertion_type"),
        field("client_assertion"),
    ) {
        (Some(secret), None, None) => match &identity.spec.client_secret {
            Some(expected) if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => true,
            _ => {
                return aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                )
            }
        },
        (None, Some(JWT_BEARER_ASSERTION_TYPE), Some(assertion)) => match &identity
            .spec
            .federated_token
        {
            Some(expected) if constant_time_eq(expected.as_bytes(), assertion.as_bytes()) => true,
            _ => {
                return aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    70021,
                    "No matching federated identity record found for presented assertion.",
                )
            }
        },
        _ => false,
    };
    if !authenticated {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            7000218,
            "The request body must contain either 'client_secret' or 'client_assertion' with client_assertion_type jwt-bearer.",
        );
    }
    match ctx.shared.issue_token(&identity.spec.object_id) {
        Ok((token, lifetime, _)) => json_resp(
            StatusCode::OK,
            &json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}),
        ),
        Err(e) => internal(&e),
    }
}

fn imds_token(ctx: &Ctx) -> Resp {
    let imds_err = |error: &str, desc: &str| {
        json_resp(
            StatusCode::BAD_REQUEST,
            &json!({"error": error, "error_description": desc}),
        )
    };
    if ctx.headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return imds_err("invalid_request", "Required metadata header not specified");
    }
    if ctx.param("api-version").is_none_or(str::is_empty) {
        return imds_err(
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    match ctx.param("resource") {
        Some(r) if r.trim_end_matches('/') == VAULT_RESOURCE => {}
        Some(_) => {
            return imds_err(
                "invalid_resource",
                "AADSTS500011: The resource principal was not found in the tenant.",
            )
        }
        None => {
            return imds_err(
                "invalid_request",
                "Required query variable 'resource' is missing",
            )
        }
    }
    let identity = match (ctx.param("client_id"), ctx.param("object_id")) {
        (Some(c), _) => ctx.shared.identity_by_client_id(c),
        (None, Some(o)) => ctx.shared.identity_by_object_id(o),
        (None, None) => ctx.shared.system_assigned_identity(),
    };
    let Some(identity) = identity else {
        return imds_err("invalid_request", "Identity not found");
    };
    match ctx.shared.issue_token(&identity.spec.object_id) {
        Ok((token, lifetime, expires_at)) => {
            let now = chrono::Utc::now().timestamp();
            json_resp(
                StatusCode::OK,
                &json!({
                    "access_token": token,
                    "client_id": identity.spec.client_id,
                    "expires_in": lifetime.to_string(),
                    "expires_on": expires_at.timestamp().to_string(),
                    "ext_expires_in": lifetime.to_string(),
                    "not_before": now.to_string(),
                    "resource": VAULT_RESOURCE,
                    "token_type": "Bearer",
                }),
            )
        }
        Err(e) => internal(&e),
    }
}

/// Compares secrets without an early exit, out of habit (the fake holds no real ones).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ----- control API -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermsBody {
    permissions: Vec<Permission>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleBody {
    count: u32,
    #[serde(default)]
    retry_after_secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnabledBody {
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutageBody {
    mode: Outage,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MillisBody {
    millis: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecsBody {
    secs: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKeyBody {
    name: String,
    #[serde(default = "default_kty")]
    kty: String,
    key_size: Option<u32>,
}

fn default_kty() -> String {
    "RSA".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddVersionBody {
    kty: Option<String>,
    key_size: Option<u32>,
}

fn parse_kind(kty: &str, size: Option<u32>) -> Result<KeyKind, Error> {
    match kty {
        "RSA" => Ok(KeyKind::Rsa {
            bits: size.unwrap_or(2048),
        }),
        "EC" if size.is_none() => Ok(KeyKind::EcP256),
        "EC" => Err(Error::BadRequest(
            "key_size does not apply to EC keys (P-256)".into(),
        )),
        other => Err(Error::BadRequest(format!(
            "kty {other:?} is not supported (RSA or EC)"
        ))),
    }
}

fn json_body<T: for<'de> Deserialize<'de>>(ctx: &Ctx) -> Result<T, Error> {
    let body = ctx
        .body
        .as_ref()
        .map_err(|()| Error::BadRequest("body too large".into()))?;
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

async fn control(ctx: &Ctx, c: Control) -> Resp {
    match control_inner(ctx, c).await {
        Ok(resp) => resp,
        Err(e) => {
            let (status, code) = match &e {
                Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "BadParameter"),
                Error::NotFound(_) => (StatusCode::NOT_FOUND, "NotFound"),
                Error::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
                Error::Corrupt(_) | Error::Io(_) | Error::Internal(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, "InternalError")
                }
            };
            kv_error(status, code, &e.to_string(), None)
        }
    }
}

async fn control_inner(ctx: &Ctx, c: Control) -> Result<Resp, Error> {
    let shared = &ctx.shared;
    let no_content = || {
        Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .unwrap_or_default()
    };
    let created = |name: &str, version: &str| {
        json_resp(
            StatusCode::CREATED,
            &json!({"name": name, "version": version, "kid": kid(ctx, name, version)}),
        )
    };
    match c {
        Control::CreateKey => {
            let b: CreateKeyBody = json_body(ctx)?;
            let kind = parse_kind(&b.kty, b.key_size)?;
            check_name(&b.name)?;
            if let KeyKind::Rsa { bits } = kind {
                state::check_rsa_bits(bits)?;
            }
            if shared.key_exists(&b.name) {
                return Err(Error::Conflict(format!("key {} already exists", b.name)));
            }
            let material = state::generate(kind).await?;
            let version = shared.insert_version(&b.name, material, true)?;
            Ok(created(&b.name, &version))
        }
        Control::AddVersion(name) => {
            let b: AddVersionBody = json_body(ctx)?;
            let kind = match b.kty {
                Some(kty) => parse_kind(&kty, b.key_size)?,
                None => match (shared.current_kind(&name)?, b.key_size) {
                    (KeyKind::Rsa { .. }, Some(bits)) => KeyKind::Rsa { bits },
                    (kind, _) => kind,
                },
            };
            if let KeyKind::Rsa { bits } = kind {
                state::check_rsa_bits(bits)?;
            }
            let material = state::generate(kind).await?;
            let version = shared.insert_version(&name, material, false)?;
            Ok(created(&name, &version))
        }
        Control::PatchKey(name, version) => {
            let body: Value = json_body(ctx)?;
            let Value::Object(map) = body else {
                return Err(Error::BadRequest("body must be a JSON object".into()));
            };
            let mut enabled = None;
            let mut exp = None;
            let mut nbf = None;
            for (k, v) in &map {
                let time = |v: &Value| match v {
                    Value::Null => Ok(None),
                    Value::Number(n) => n.as_i64().map(Some).ok_or(()),
                    _ => Err(()),
                };
                match k.as_str() {
                    "enabled" => {
                        enabled =
                            Some(v.as_bool().ok_or_else(|| {
                                Error::BadRequest("enabled must be a boolean".into())
                            })?)
                    }
                    "exp" => {
                        exp = Some(time(v).map_err(|()| {
                            Error::BadRequest("exp must be unix seconds or null".into())
                        })?)
                    }
                    "nbf" => {
                        nbf = Some(time(v).map_err(|()| {
                            Error::BadRequest("nbf must be unix seconds or null".into())
                        })?)
                    }
                    other => return Err(Error::BadRequest(format!("unknown attribute {other:?}"))),
                }
            }
            shared.update_versions(&name, version.as_deref(), |v| {
                if let Some(e) = enabled {
                    v.enabled = e;
                }
                if let Some(e) = exp {
                    v.exp = e;
                }
                if let Some(n) = nbf {
                    v.nbf = n;
                }
            })?;
            Ok(no_content())
        }
        Control::DeleteKey(name) => shared.set_deleted(&name, true).map(|()| no_content()),
        Control::RecoverKey(name) => shared.set_deleted(&name, false).map(|()| no_content()),
        Control::AddIdentity => {
            let spec: IdentitySpec = json_body(ctx)?;
            shared.register_identity(spec)?;
            Ok(json_resp(StatusCode::CREATED, &json!({})))
        }
        Control::RemoveIdentity(o) => shared.remove_identity(&o).map(|()| no_content()),
        Control::Grant(o, grant) => {
            let b: PermsBody = json_body(ctx)?;
            shared
                .set_permissions(&o, &b.permissions, grant)
                .map(|()| no_content())
        }
        Control::IssueToken(o) => {
            let (token, lifetime, _) = shared.issue_token(&o)?;
            Ok(json_resp(
                StatusCode::OK,
                &json!({"access_token": token, "expires_in": lifetime}),
            ))
        }
        Control::ExpireTokens => shared.expire_all_tokens().map(|()| no_content()),
        Control::TokenLifetime => {
            let b: SecsBody = json_body(ctx)?;
            shared.set_token_lifetime(std::time::Duration::from_secs(b.secs));
            Ok(no_content())
        }
        Control::Throttle => {
            let b: ThrottleBody = json_body(ctx)?;
            shared.throttle(b.count, b.retry_after_secs);
            Ok(no_content())
        }
        Control::Outage => {
            let b: OutageBody = json_body(ctx)?;
            shared.set_outage(b.mode);
            Ok(no_content())
        }
        Control::Latency => {
            let b: MillisBody = json_body(ctx)?;
            shared.set_latency(std::time::Duration::from_millis(b.millis));
            Ok(no_content())
        }
        Control::CorruptUnwrap => {
            let b: EnabledBody = json_body(ctx)?;
            shared.set_corrupt_unwrap(b.enabled);
            Ok(no_content())
        }
        Control::Counters => Ok(json_resp(StatusCode::OK, &json!(shared.counters()))),
        Control::ResetCounters => {
            shared.reset_counters();
            Ok(no_content())
        }
    }
}

// ----- responses -----

fn internal(e: &Error) -> Resp {
    tracing::error!(error = %e, "fake key vault internal error");
    kv_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "The fake failed to process the request.",
        None,
    )
}

/// Key Vault's error body: `{"error":{"code","message"[,"innererror":{"code"}]}}`.
fn kv_error(status: StatusCode, code: &str, message: &str, inner: Option<&str>) -> Resp {
    let mut err = json!({"code": code, "message": message});
    if let (Some(inner), Some(obj)) = (inner, err.as_object_mut()) {
        obj.insert("innererror".into(), json!({"code": inner}));
    }
    json_resp(status, &json!({"error": err}))
}

fn json_resp(status: StatusCode, body: &Value) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}
