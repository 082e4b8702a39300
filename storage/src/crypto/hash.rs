//! SHA-256 / SHA-512 whose running state can be saved into an upload session and
//! resumed on any node (built on `sha2::compress256`/`compress512`).
//!
//! The `sha2` hashers do not expose their state, so the block buffering, padding and
//! length encoding of FIPS 180-4 are done here; only the compression functions are
//! borrowed.
//!
//! Export format (version 1), all integers big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version = 1 |
//! | 1 | algorithm: 1 = SHA-256, 2 = SHA-512 |
//! | 8 | bytes hashed so far, `len` |
//! | 32 / 64 | chaining value: 8 words of 4 / 8 bytes |
//! | `len mod 64` / `len mod 128` | buffered partial block |

use sha2::digest::consts::{U128, U64};
use sha2::digest::generic_array::GenericArray;

use super::IntegrityError;
use crate::names::{Algorithm, Digest};

const EXPORT_VERSION: u8 = 1;
const ALG_SHA256: u8 = 1;
const ALG_SHA512: u8 = 2;

/// FIPS 180-4 §5.3.3.
const SHA256_IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];
/// FIPS 180-4 §5.3.5.
const SHA512_IV: [u64; 8] = [
    0x6a09e667f3bcc908,
    0xbb67ae8584caa73b,
    0x3c6ef372fe94f82b,
    0xa54ff53a5f1d36f1,
    0x510e527fade682d1,
    0x9b05688c2b3e6c1f,
    0x1f83d9abfb41bd6b,
    0x5be0cd19137e2179,
];

/// Chaining value of one of the two algorithms.
#[derive(Clone, PartialEq, Eq)]
enum Chain {
    Sha256([u32; 8]),
    Sha512([u64; 8]),
}

impl Chain {
    fn block_len(&self) -> usize {
        match self {
            Chain::Sha256(_) => 64,
            Chain::Sha512(_) => 128,
        }
    }

    /// Compresses `blocks` (a whole number of blocks) into the chaining value.
    fn compress(&mut self, blocks: &[u8]) {
        match self {
            Chain::Sha256(h) => {
                for block in blocks.chunks_exact(64) {
                    sha2::compress256(
                        h,
                        std::slice::from_ref(GenericArray::<u8, U64>::from_slice(block)),
                    );
                }
            }
            Chain::Sha512(h) => {
                for block in blocks.chunks_exact(128) {
                    sha2::compress512(
                        h,
                        std::slice::from_ref(GenericArray::<u8, U128>::from_slice(block)),
                    );
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct ResumableHash {
    chain: Chain,
    /// Bytes hashed so far (the buffered ones included).
    len: u64,
    /// The partial block not yet compressed: `len mod block_len` bytes are valid.
    buf: [u8; 128],
}

impl std::fmt::Debug for ResumableHash {
    // The buffered bytes are blob plaintext: print only what is not content.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumableHash")
            .field("algorithm", &self.algorithm())
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl ResumableHash {
    pub fn new(algorithm: Algorithm) -> ResumableHash {
        let chain = match algorithm {
            Algorithm::Sha256 => Chain::Sha256(SHA256_IV),
            Algorithm::Sha512 => Chain::Sha512(SHA512_IV),
        };
        ResumableHash {
            chain,
            len: 0,
            buf: [0; 128],
        }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.chain {
            Chain::Sha256(_) => Algorithm::Sha256,
            Chain::Sha512(_) => Algorithm::Sha512,
        }
    }

    fn buffered(&self) -> usize {
        (self.len % self.chain.block_len() as u64) as usize
    }

    pub fn update(&mut self, mut data: &[u8]) {
        let block = self.chain.block_len();
        let mut have = self.buffered();
        self.len += data.len() as u64;
        if have > 0 {
            let n = (block - have).min(data.len());
            self.buf[have..have + n].copy_from_slice(&data[..n]);
            data = &data[n..];
            have += n;
            if have < block {
                return;
            }
            self.chain.compress(&self.buf[..block]);
        }
        // Whole blocks straight from the input; only the remainder is buffered.
        let whole = data.len() - data.len() % block;
        self.chain.compress(&data[..whole]);
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digest of everything hashed so far (does not consume the state).
    pub fn digest(&self) -> Digest {
        let block = self.chain.block_len();
        // The length field is 8 bytes for SHA-256 and 16 for SHA-512 (FIPS 180-4 §5.1).
        let len_field = block / 8;
        let have = self.buffered();
        let mut tail = [0u8; 256];
        tail[..have].copy_from_slice(&self.buf[..have]);
        tail[have] = 0x80;
        let padded = if have + 1 + len_field <= block {
            block
        } else {
            2 * block
        };
        let bits = u128::from(self.len) * 8;
        tail[padded - len_field..padded].copy_from_slice(&bits.to_be_bytes()[16 - len_field..]);
        let mut chain = self.chain.clone();
        chain.compress(&tail[..padded]);
        match chain {
            Chain::Sha256(h) => {
                let out: Vec<u8> = h.iter().flat_map(|w| w.to_be_bytes()).collect();
                Digest::from_bytes(Algorithm::Sha256, &out)
            }
            Chain::Sha512(h) => {
                let out: Vec<u8> = h.iter().flat_map(|w| w.to_be_bytes()).collect();
                Digest::from_bytes(Algorithm::Sha512, &out)
            }
        }
    }

    /// A compact, versioned binary encoding of the state (algorithm, length, chaining
    /// value, buffered partial block).
    pub fn export(&self) -> Vec<u8> {
        let have = self.buffered();
        let mut out = Vec::with_capacity(2 + 8 + 64 + have);
        out.push(EXPORT_VERSION);
        match &self.chain {
            Chain::Sha256(h) => {
                out.push(ALG_SHA256);
                out.extend_from_slice(&self.len.to_be_bytes());
                h.iter()
                    .for_each(|w| out.extend_from_slice(&w.to_be_bytes()));
            }
            Chain::Sha512(h) => {
                out.push(ALG_SHA512);
                out.extend_from_slice(&self.len.to_be_bytes());
                h.iter()
                    .for_each(|w| out.extend_from_slice(&w.to_be_bytes()));
            }
        }
        out.extend_from_slice(&self.buf[..have]);
        out
    }

    /// Fails on anything [`ResumableHash::export`] could not have produced.
    ///
    /// That is: a version other than 1, an unknown algorithm, a length whose bit count
    /// does not fit the algorithm's length field (2^64 bits for both, since `len` is a u64
    /// of bytes), or a total length that does not match `len mod block`. A chaining value
    /// cannot be checked; the state is expected to travel sealed (`BlobKeys::seal_aux`).
    pub fn import(bytes: &[u8]) -> Result<ResumableHash, IntegrityError> {
        let [version, alg, rest @ ..] = bytes else {
            return Err(IntegrityError);
        };
        if *version != EXPORT_VERSION || rest.len() < 8 {
            return Err(IntegrityError);
        }
        let (len_bytes, rest) = rest.split_at(8);
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(len_bytes);
        let len = u64::from_be_bytes(len8);
        // `update` could never reach a length whose bit count overflows u64.
        if len > u64::MAX / 8 {
            return Err(IntegrityError);
        }
        let (chain, rest) = match *alg {
            ALG_SHA256 if rest.len() >= 32 => {
                let (cv, rest) = rest.split_at(32);
                let mut h = [0u32; 8];
                for (w, b) in h.iter_mut().zip(cv.chunks_exact(4)) {
                    *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
                }
                (Chain::Sha256(h), rest)
            }
            ALG_SHA512 if rest.len() >= 64 => {
                let (cv, rest) = rest.split_at(64);
                let mut h = [0u64; 8];
                for (w, b) in h.iter_mut().zip(cv.chunks_exact(8)) {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    *w = u64::from_be_bytes(a);
                }
                (Chain::Sha512(h), rest)
            }
            _ => return Err(IntegrityError),
        };
        let mut state = ResumableHash {
            chain,
            len,
            buf: [0; 128],
        };
        if rest.len() != state.buffered() {
            return Err(IntegrityError);
        }
        state.buf[..rest.len()].copy_from_slice(rest);
        Ok(state)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 256) as u8).collect()
    }

    #[test]
    fn known_answers() {
        let h = ResumableHash::new(Algorithm::Sha256);
        assert!(h.is_empty());
        assert_eq!(
            h.digest().to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut h = ResumableHash::new(Algorithm::Sha512);
        h.update(b"abc");
        assert_eq!(
            h.digest().hex(),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn padding_boundaries_match_sha2() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            for n in [
                0, 1, 55, 56, 63, 64, 65, 111, 112, 119, 127, 128, 129, 255, 256, 1000,
            ] {
                let data = pattern(n);
                let mut h = ResumableHash::new(alg);
                h.update(&data);
                assert_eq!(h.digest(), Digest::compute(alg, &data), "{alg:?} {n}");
                assert_eq!(h.len(), n as u64);
            }
        }
    }

    #[test]
    fn export_layout_and_import_rejections() {
        let mut h = ResumableHash::new(Algorithm::Sha256);
        h.update(&pattern(70));
        let e = h.export();
        assert_eq!(e.len(), 2 + 8 + 32 + 6);
        assert_eq!(&e[..10], &[1, 1, 0, 0, 0, 0, 0, 0, 0, 70]);
        let back = ResumableHash::import(&e).unwrap();
        assert_eq!(back.digest(), h.digest());

        let mut bad = e.clone();
        bad[0] = 2;
        assert!(ResumableHash::import(&bad).is_err(), "version");
        let mut bad = e.clone();
        bad[1] = 3;
        assert!(ResumableHash::import(&bad).is_err(), "algorithm");
        let mut bad = e.clone();
        bad[1] = ALG_SHA512;
        assert!(
            ResumableHash::import(&bad).is_err(),
            "algorithm/length mismatch"
        );
        assert!(
            ResumableHash::import(&e[..e.len() - 1]).is_err(),
            "short buffer"
        );
        assert!(
            ResumableHash::import(&[e.clone(), vec![0]].concat()).is_err(),
            "long"
        );
        let mut bad = e.clone();
        bad[9] = 71;
        assert!(ResumableHash::import(&bad).is_err(), "length vs buffer");
        let mut bad = e.clone();
        bad[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(ResumableHash::import(&bad).is_err(), "length overflow");
        for n in 0..12 {
            assert!(ResumableHash::import(&e[..n]).is_err(), "truncated to {n}");
        }
        assert!(ResumableHash::import(&[]).is_err());
    }

    #[test]
    fn debug_hides_buffered_bytes() {
        let mut h = ResumableHash::new(Algorithm::Sha256);
        h.update(b"secret");
        let dbg = format!("{h:?}");
        assert!(!dbg.contains("115"), "{dbg}");
        assert!(dbg.contains("len: 6"), "{dbg}");
    }

    proptest! {
        #[test]
        fn split_export_import_matches_sha2(
            sha512 in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..700),
            cuts in proptest::collection::vec(0usize..700, 0..6),
        ) {
            let alg = if sha512 { Algorithm::Sha512 } else { Algorithm::Sha256 };
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut h = ResumableHash::new(alg);
            let mut at = 0;
            for cut in cuts {
                h.update(&data[at..cut]);
                at = cut;
                // Every cut is also a trip through export/import, as across requests.
                prop_assert_eq!(h.digest(), Digest::compute(alg, &data[..at]));
                h = ResumableHash::import(&h.export()).unwrap();
                prop_assert_eq!(h.len(), at as u64);
            }
            h.update(&data[at..]);
            prop_assert_eq!(h.digest(), Digest::compute(alg, &data));
        }
    }
}
