//! The tests, one module per area of the spec. Each case names the requirement it
//! checks (the spec's endpoint ids `end-N` and section names, distribution-spec v1.1.1)
//! and its strength.

mod base;
mod discovery;
mod errors;
mod management;
mod pull;
mod push;
mod referrers;

use crate::TestCase;

/// Declares a [`TestCase`].
macro_rules! case {
    ($id:literal, $area:ident, $level:ident, $req:literal, $f:path) => {
        $crate::TestCase {
            id: $id,
            area: $crate::Area::$area,
            level: $crate::Level::$level,
            requirement: $req,
            run: $f,
        }
    };
}
pub(crate) use case;

pub fn all() -> Vec<TestCase> {
    let mut v = Vec::new();
    v.extend(base::cases());
    v.extend(pull::cases());
    v.extend(push::cases());
    v.extend(discovery::cases());
    v.extend(referrers::cases());
    v.extend(management::cases());
    v.extend(errors::cases());
    v
}
