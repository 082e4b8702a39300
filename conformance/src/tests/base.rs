//! The API version check (end-1).

use super::case;
use crate::ctx::{ensure, expect_status, Ctx, Failure};
use crate::TestCase;

pub fn cases() -> Vec<TestCase> {
    vec![
        case!("base/v2-ok", Base, Must,
            "end-1: GET /v2/ answers 200 when the registry implements the spec",
            v2_ok),
        case!("base/api-version-header", Base, Should,
            "apdx-1 (Docker Registry HTTP API V2), API Version Check: a 200 from /v2/ SHOULD carry Docker-Distribution-API-Version: registry/2.0",
            api_version_header),
    ]
}

fn v2_ok(ctx: &mut Ctx) -> Result<(), Failure> {
    let resp = ctx.get("/v2/")?;
    expect_status(&resp, &[200], "GET /v2/")
}

fn api_version_header(ctx: &mut Ctx) -> Result<(), Failure> {
    let resp = ctx.get("/v2/")?;
    expect_status(&resp, &[200], "GET /v2/")?;
    let v = resp.header("Docker-Distribution-API-Version");
    ensure(v == Some("registry/2.0"), || {
        format!("Docker-Distribution-API-Version is {v:?}, expected \"registry/2.0\"")
    })
}
