//! Tests for `ed25519_fast`: Wycheproof vectors and a differential test
//! against ed25519-compact 2.6 (the verifier it replaces).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::scalar::Scalar;
use portcullis_jose::ed25519_fast::Ed25519Public;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha512};

fn unhex(s: &str) -> Vec<u8> {
    portcullis_jose::wycheproof::hex(s).unwrap_or_else(|| panic!("not hex: {s}"))
}

fn b64url(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => panic!("bad base64 char {c}"),
        } as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Verdict of the fast verifier: key rejected at load => false.
/// Both load modes (with the per-key table, and one-shot as for DPoP proofs) must agree.
fn fast_verdict(pk: &[u8; 32], msg: &[u8], sig: &[u8]) -> (bool, bool) {
    let table = Ed25519Public::from_bytes(pk).map(|k| k.verify(msg, sig));
    let one_shot = Ed25519Public::from_bytes_one_shot(pk).map(|k| k.verify(msg, sig));
    assert_eq!(table, one_shot, "load modes differ for key {pk:02x?}");
    match table {
        None => (false, false),
        Some(v) => (true, v),
    }
}

/// What the filter did before `ed25519_fast`: from_slice + verify (plus `validate` to know
/// whether compact considers the key itself acceptable).
fn compact_verdict(pk: &[u8; 32], msg: &[u8], sig: &[u8]) -> (bool, bool) {
    let pk = ed25519_compact::PublicKey::from_slice(pk).unwrap();
    let key_ok = pk.validate().is_ok();
    let ok = match ed25519_compact::Signature::from_slice(sig) {
        Ok(sig) => pk.verify(msg, &sig).is_ok(),
        Err(_) => false,
    };
    (key_ok, ok)
}

#[derive(Default, Debug)]
struct WycheproofCounts {
    run: usize,
    valid: usize,
    invalid: usize,
    acceptable: usize,
    key_rejected: usize,
    compact_disagrees_with_label: usize,
}

/// Run every vector of `ed25519_test.json` found in `dir`.
fn run_wycheproof(dir: &Path) -> WycheproofCounts {
    let path = dir.join("ed25519_test.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut c = WycheproofCounts::default();
    for group in doc["testGroups"].as_array().unwrap() {
        let pk_bytes = if let Some(h) = group["publicKey"]["pk"].as_str() {
            unhex(h)
        } else if let Some(x) = group["publicKeyJwk"]["x"].as_str() {
            b64url(x)
        } else if let Some(x) = group["jwk"]["x"].as_str() {
            b64url(x)
        } else {
            panic!("group without a public key: {group}");
        };
        let pk: [u8; 32] = pk_bytes.as_slice().try_into().unwrap();
        let key = Ed25519Public::from_bytes(&pk);
        for t in group["tests"].as_array().unwrap() {
            let id = &t["tcId"];
            let msg = unhex(t["msg"].as_str().unwrap());
            let sig = unhex(t["sig"].as_str().unwrap());
            let result = t["result"].as_str().unwrap();
            let got = match &key {
                Some(k) => k.verify(&msg, &sig),
                None => false,
            };
            if key.is_none() {
                c.key_rejected += 1;
            }
            let (_, compact) = compact_verdict(&pk, &msg, &sig);
            match result {
                "valid" => {
                    c.valid += 1;
                    assert!(got, "tcId {id}: valid vector rejected");
                    if !compact {
                        c.compact_disagrees_with_label += 1;
                        eprintln!("tcId {id}: compact rejects a valid vector");
                    }
                }
                "invalid" => {
                    c.invalid += 1;
                    assert!(!got, "tcId {id}: invalid vector accepted");
                    if compact {
                        c.compact_disagrees_with_label += 1;
                        eprintln!("tcId {id}: compact accepts an invalid vector");
                    }
                }
                "acceptable" => c.acceptable += 1,
                other => panic!("tcId {id}: unknown result {other}"),
            }
            // Same verdict as today's verifier on every vector, labelled or not.
            assert_eq!(
                got, compact,
                "tcId {id}: verdict differs from ed25519-compact"
            );
            c.run += 1;
        }
    }
    c
}

#[test]
fn wycheproof_ed25519() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/testdata/wycheproof"
    );
    let c = run_wycheproof(Path::new(dir));
    println!("wycheproof ed25519: {c:?}");
    assert!(c.run > 0, "no Wycheproof vector ran");
    assert_eq!(c.compact_disagrees_with_label, 0);
}

// ---------------------------------------------------------------------------
// Differential test against ed25519-compact.

const L_BYTES: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Little-endian 256-bit addition (wrapping).
fn add_le(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = a[i] as u16 + b[i] as u16 + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    out
}

/// Interesting point encodings: the 8 torsion points (both sign bits), and
/// every non-canonical y (y + p for y in 0..19, both sign bits), plus y = p
/// exactly and the all-ones encoding.
fn special_encodings() -> Vec<[u8; 32]> {
    let mut v = Vec::new();
    for t in EIGHT_TORSION.iter() {
        let e = t.compress().to_bytes();
        v.push(e);
        let mut f = e;
        f[31] ^= 0x80;
        v.push(f);
    }
    let p: [u8; 32] = {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        p
    };
    for y in 0u8..19 {
        let mut yb = [0u8; 32];
        yb[0] = y;
        let e = add_le(&p, &yb);
        v.push(e);
        let mut f = e;
        f[31] |= 0x80;
        v.push(f);
    }
    v.push([0xff; 32]);
    v.push([0u8; 32]);
    v
}

fn random_scalar(rng: &mut StdRng) -> Scalar {
    let mut b = [0u8; 64];
    rng.fill_bytes(&mut b);
    Scalar::from_bytes_mod_order_wide(&b)
}

/// Manual Ed25519 signing with arbitrary (possibly mixed-order) A and R:
/// A = [a]B + ta, R = [r]B + tr, s = r + H(R||A||M) a.
fn manual_sign(
    rng: &mut StdRng,
    msg: &[u8],
    ta: &EdwardsPoint,
    tr: &EdwardsPoint,
) -> ([u8; 32], [u8; 64]) {
    let a = random_scalar(rng);
    let r = random_scalar(rng);
    let big_a = (ED25519_BASEPOINT_POINT * a + ta).compress().to_bytes();
    let big_r = (ED25519_BASEPOINT_POINT * r + tr).compress().to_bytes();
    let mut h = Sha512::new();
    h.update(big_r);
    h.update(big_a);
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&big_r);
    sig[32..].copy_from_slice(s.as_bytes());
    (big_a, sig)
}

#[test]
fn differential_vs_ed25519_compact() {
    let seed: u64 = std::env::var("PORTCULLIS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05ee_ded2_5519_fa57);
    let cases: usize = std::env::var("PORTCULLIS_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000);
    println!("differential: seed={seed} cases={cases}");
    let mut rng = StdRng::seed_from_u64(seed);
    let specials = special_encodings();
    const KINDS: usize = 20;
    let mut per_kind_accept = [0usize; KINDS];
    let mut per_kind = [0usize; KINDS];
    let mut keys_rejected = 0usize;
    let mut disagreements = Vec::new();

    for i in 0..cases {
        let mut seed_bytes = [0u8; 32];
        rng.fill_bytes(&mut seed_bytes);
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed_bytes));
        let mlen = rng.gen_range(0..200usize);
        let mut msg = vec![0u8; mlen];
        rng.fill_bytes(&mut msg);
        let sig_c = kp.sk.sign(&msg, None);
        let mut pk: [u8; 32] = *kp.pk;
        let mut sig: Vec<u8> = sig_c.to_vec();
        let kind = i % KINDS;
        match kind {
            0 => {}
            1 => {
                let bit = rng.gen_range(0..512);
                sig[bit / 8] ^= 1 << (bit % 8);
            }
            2 => {
                if msg.is_empty() {
                    msg.push(rng.gen());
                } else {
                    let bit = rng.gen_range(0..msg.len() * 8);
                    msg[bit / 8] ^= 1 << (bit % 8);
                }
            }
            3 => {
                let bit = rng.gen_range(0..256);
                pk[bit / 8] ^= 1 << (bit % 8);
            }
            4 => {
                // s + L (non-canonical s, same value mod L)
                let s: [u8; 32] = sig[32..].try_into().unwrap();
                sig[32..].copy_from_slice(&add_le(&s, &L_BYTES));
            }
            5 => {
                sig[32..].fill(0);
            }
            6 => {
                let e = specials[rng.gen_range(0..16)];
                sig[..32].copy_from_slice(&e);
            }
            7 => {
                let e = specials[rng.gen_range(16..specials.len())];
                sig[..32].copy_from_slice(&e);
            }
            8 => {
                pk = specials[rng.gen_range(0..16)];
            }
            9 => {
                pk = specials[rng.gen_range(16..specials.len())];
            }
            10 => {
                rng.fill_bytes(&mut pk);
            }
            11 => {
                // mixed-order key: A = aB + T, otherwise honest signature
                let t = EIGHT_TORSION[rng.gen_range(1..8)];
                let (a, s) = manual_sign(&mut rng, &msg, &t, &EdwardsPoint::default());
                pk = a;
                sig = s.to_vec();
            }
            12 => {
                // mixed-order R: R = rB + T
                let t = EIGHT_TORSION[rng.gen_range(1..8)];
                let (a, s) = manual_sign(&mut rng, &msg, &EdwardsPoint::default(), &t);
                pk = a;
                sig = s.to_vec();
            }
            13 => {
                // both mixed order
                let t1 = EIGHT_TORSION[rng.gen_range(0..8)];
                let t2 = EIGHT_TORSION[rng.gen_range(0..8)];
                let (a, s) = manual_sign(&mut rng, &msg, &t1, &t2);
                pk = a;
                sig = s.to_vec();
            }
            14 => {
                // wrong length
                if rng.gen() {
                    sig.pop();
                } else {
                    sig.push(rng.gen());
                }
            }
            15 => {
                rng.fill_bytes(&mut sig);
            }
            16 => {
                // -A: flip the key's sign bit
                pk[31] ^= 0x80;
            }
            17 => {
                // s with top bits set / s + k*L for larger k
                match rng.gen_range(0..3) {
                    0 => sig[63] |= 0x80,
                    1 => sig[63] |= 0x20,
                    _ => {
                        let s: [u8; 32] = sig[32..].try_into().unwrap();
                        let s2 = add_le(&add_le(&s, &L_BYTES), &L_BYTES);
                        sig[32..].copy_from_slice(&s2);
                    }
                }
            }
            18 => {
                // R sign bit flipped (-R), or random R
                if rng.gen() {
                    sig[31] ^= 0x80;
                } else {
                    rng.fill_bytes(&mut sig[..32]);
                }
            }
            _ => {
                // valid signature, R replaced by R + small-order point via
                // re-encoding a decoded mixed-order point (manual, honest key)
                let t = EIGHT_TORSION[rng.gen_range(0..8)];
                let (a, s) = manual_sign(&mut rng, &msg, &EdwardsPoint::default(), &t);
                pk = a;
                sig = s.to_vec();
                if rng.gen() {
                    let bit = rng.gen_range(0..256);
                    sig[32 + bit / 8] ^= 1 << (bit % 8);
                }
            }
        }
        let f = fast_verdict(&pk, &msg, &sig);
        let c = compact_verdict(&pk, &msg, &sig);
        per_kind[kind] += 1;
        if c.1 {
            per_kind_accept[kind] += 1;
        }
        if !c.0 {
            keys_rejected += 1;
        }
        if f != c {
            disagreements.push(format!(
                "case {i} kind {kind}: fast {f:?} compact {c:?} pk {pk:02x?} sig {sig:02x?} msg {msg:02x?}"
            ));
        }
    }
    println!("per kind cases:   {per_kind:?}");
    println!("per kind accepts: {per_kind_accept:?}");
    println!("keys rejected by compact.validate(): {keys_rejected}");
    println!("disagreements: {}", disagreements.len());
    for d in disagreements.iter().take(10) {
        println!("{d}");
    }
    assert!(disagreements.is_empty());
}

#[test]
fn special_keys_all_rejected_or_agree() {
    // Every special encoding as a key, with a fixed message and random-ish sig.
    for e in special_encodings() {
        let f = Ed25519Public::from_bytes(&e).is_some();
        let c = ed25519_compact::PublicKey::new(e).validate().is_ok();
        assert_eq!(f, c, "key {e:02x?}");
        assert!(!f, "special encoding accepted as a key: {e:02x?}");
    }
}
