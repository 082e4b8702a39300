//! Content digests, computed here rather than borrowed from the registry's code.

use sha2::Digest as _;

/// `sha256:<64 lowercase hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex(&sha2::Sha256::digest(data)))
}

/// `sha512:<128 lowercase hex>` of `data`.
pub fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex(&sha2::Sha512::digest(data)))
}

/// The digest of `data` under the algorithm `digest` names, if the suite knows it.
pub fn verify(digest: &str, data: &[u8]) -> Option<bool> {
    match digest.split_once(':')?.0 {
        "sha256" => Some(sha256(data) == digest),
        "sha512" => Some(sha512(data) == digest),
        _ => None,
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // FIPS 180-2 "abc" vectors.
        assert_eq!(
            sha256(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(sha512(b"abc").starts_with("sha512:ddaf35a193617aba"));
        assert_eq!(verify(&sha256(b"x"), b"x"), Some(true));
        assert_eq!(verify(&sha256(b"x"), b"y"), Some(false));
        assert_eq!(verify("md5:00", b"y"), None);
    }
}
