//! `/auth/token`: the built-in token endpoint of the distribution token spec.
//!
//! - `GET /auth/token?service=…&scope=…[&scope=…]` with optional Basic credentials:
//!   what `docker login`, `docker pull`/`push`, skopeo and podman send after a Bearer
//!   challenge. Without credentials the token carries what anonymous clients may do.
//! - `POST /auth/token` with the OAuth2 form `grant_type=password&username=…&password=…
//!   &service=…&scope=…` (scopes space-separated). Refresh tokens are not issued, so
//!   `grant_type=refresh_token` is refused (400); clients then use the password grant.
//!
//! The answer is `{"token", "access_token", "expires_in", "issued_at"}`. A wrong
//! password is 401 with a Basic challenge; a scope asking for more than the policy
//! allows gets the allowed subset (possibly nothing), as the spec says.

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Request, StatusCode};

use super::{HandlerResult, Reply};
use crate::app::App;
use crate::auth::token::Scope;
use crate::auth::{parse_authorization, Credentials, IssueError, Refusal};
use crate::http::body::{collect_limited, RequestBody};
use crate::http::conn::Connection;
use crate::http::errors::{no_such_endpoint, ApiError, ErrorCode};
use crate::http::query::Query;

/// The largest OAuth2 form read.
const MAX_FORM_BYTES: usize = 64 * 1024;

pub async fn handle(
    app: &App,
    conn: &Connection,
    post: bool,
    query: &Query,
    req: Request<RequestBody>,
) -> HandlerResult {
    if !app.auth.issues_tokens() {
        return Err(no_such_endpoint());
    }
    let (credentials, service, scopes) = if post {
        let form = read_form(req).await?;
        match form.get("grant_type") {
            Some("password") => {}
            Some(other) => {
                return Err(ApiError::new(ErrorCode::Unsupported)
                    .with_status(StatusCode::BAD_REQUEST)
                    .with_message(format!(
                        "grant_type {other:?} is not supported (use password)"
                    )))
            }
            None => {
                return Err(ApiError::new(ErrorCode::Unsupported)
                    .with_status(StatusCode::BAD_REQUEST)
                    .with_message("grant_type is required"))
            }
        }
        let (Some(user), Some(password)) = (form.get("username"), form.get("password")) else {
            return Err(unauthorized(app, "username and password are required"));
        };
        let credentials = Some((user.to_owned(), password.to_owned()));
        let service = form.get("service").map(str::to_owned);
        (credentials, service, Scope::parse_all(form.all("scope")))
    } else {
        let credentials = match req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()) {
            None => None,
            Some(raw) => match parse_authorization(raw) {
                Ok(Credentials::Basic { user, password }) => Some((user, password)),
                // A token is no credential for getting a token.
                Ok(Credentials::Bearer(_)) => None,
                Err(e) => return Err(refused(app, app.auth.malformed(conn, e.message()))),
            },
        };
        let service = query.get("service").map(str::to_owned);
        (credentials, service, Scope::parse_all(query.all("scope")))
    };
    match app
        .auth
        .issue(conn, credentials, service.as_deref(), &scopes)
        .await
    {
        Ok(issued) => Ok(Reply::new(StatusCode::OK)
            .json("application/json", &issued)
            .build()),
        Err(IssueError::Refused(r)) => Err(refused(app, r)),
        Err(IssueError::WrongService) => Err(ApiError::new(ErrorCode::Denied)
            .with_status(StatusCode::BAD_REQUEST)
            .with_message("this token endpoint issues tokens for another service")),
        Err(IssueError::Internal) => Err(ApiError::new(ErrorCode::Unknown)),
    }
}

fn unauthorized(app: &App, message: &'static str) -> ApiError {
    ApiError::new(ErrorCode::Unauthorized)
        .with_message(message)
        .with_header(WWW_AUTHENTICATE, app.auth.basic_challenge())
}

fn refused(app: &App, r: Refusal) -> ApiError {
    match r {
        Refusal::Unauthenticated { message, .. } => unauthorized(app, message),
        Refusal::Denied => ApiError::new(ErrorCode::Denied),
        Refusal::TooMany(wait) => ApiError::new(ErrorCode::TooManyRequests)
            .with_message("too many failed authentications; try again later")
            .with_header(
                http::header::RETRY_AFTER,
                crate::http::gate::retry_after(wait),
            ),
    }
}

async fn read_form(req: Request<RequestBody>) -> Result<Query, ApiError> {
    let body = collect_limited(
        req.into_body(),
        MAX_FORM_BYTES,
        4 * MAX_FORM_BYTES as u64,
        false,
    )
    .await
    .map_err(|_| {
        ApiError::new(ErrorCode::Unsupported)
            .with_status(StatusCode::BAD_REQUEST)
            .with_message(format!(
                "the form must be application/x-www-form-urlencoded and at most {MAX_FORM_BYTES} bytes"
            ))
    })?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(ErrorCode::Unsupported)
            .with_status(StatusCode::BAD_REQUEST)
            .with_message("the form is not UTF-8")
    })?;
    Ok(Query::parse(Some(text)))
}
