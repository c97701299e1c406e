//! Wycheproof and differential (against the `p256` crate) tests for `p256_fast`.
// A test fails by panicking; these lints guard production code, not the harness.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::elliptic_curve::ff::PrimeField;
use p256::{ProjectivePoint, Scalar};
use portcullis_jose::p256_fast::P256Public;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The Wycheproof vectors, in `../shared` beside the repository.
const WYCHEPROOF_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/wycheproof"
);

fn hex(s: &str) -> Vec<u8> {
    portcullis_jose::wycheproof::hex(s).unwrap_or_else(|| panic!("not hex: {s}"))
}

fn arr32(b: &[u8]) -> [u8; 32] {
    b.try_into().expect("32 bytes")
}

/// The `p256` crate's verdict on the same inputs.
fn reference(x: &[u8; 32], y: &[u8; 32], digest: &[u8; 32], sig: &[u8]) -> bool {
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    let Ok(vk) = VerifyingKey::from_sec1_bytes(&sec1) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(sig) else {
        return false;
    };
    vk.verify_prehash(digest, &sig).is_ok()
}

fn run_wycheproof(dir: &Path) {
    let path = dir.join("ecdsa_secp256r1_sha256_p1363_test.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).expect("json");
    let (mut valid, mut invalid, mut acceptable, mut bad_keys) = (0usize, 0usize, 0usize, 0usize);
    let mut failures = Vec::new();
    for group in json["testGroups"].as_array().expect("groups") {
        let key = hex(group["publicKey"]["uncompressed"]
            .as_str()
            .expect("uncompressed"));
        // A key that is not a 65-byte uncompressed point cannot even be offered to from_affine.
        let coords = if key.len() == 65 && key[0] == 4 {
            Some((arr32(&key[1..33]), arr32(&key[33..65])))
        } else {
            None
        };
        let pk = coords.and_then(|(x, y)| P256Public::from_affine(&x, &y));
        let one_shot = coords.and_then(|(x, y)| P256Public::from_affine_one_shot(&x, &y));
        assert_eq!(pk.is_some(), one_shot.is_some(), "key load differs by mode");
        if pk.is_none() {
            bad_keys += 1;
        }
        for t in group["tests"].as_array().expect("tests") {
            let id = t["tcId"].as_u64().unwrap_or(0);
            let msg = hex(t["msg"].as_str().expect("msg"));
            let sig = hex(t["sig"].as_str().expect("sig"));
            let digest: [u8; 32] = Sha256::digest(&msg).into();
            let got = pk
                .as_ref()
                .is_some_and(|k| k.verify_prehashed(&digest, &sig));
            let got1 = one_shot
                .as_ref()
                .is_some_and(|k| k.verify_prehashed(&digest, &sig));
            assert_eq!(got, got1, "tc{id}: table and one-shot verdicts differ");
            match t["result"].as_str().expect("result") {
                "valid" => {
                    valid += 1;
                    if !got {
                        failures.push(format!("tc {id} valid but rejected: {}", t["comment"]));
                    }
                }
                "invalid" => {
                    invalid += 1;
                    if got {
                        failures.push(format!("tc {id} invalid but accepted: {}", t["comment"]));
                    }
                }
                other => {
                    acceptable += 1;
                    println!("tc {id} {other}: ours={got} ({})", t["comment"]);
                }
            }
        }
    }
    println!(
        "wycheproof p1363: valid={valid} invalid={invalid} acceptable={acceptable} \
         groups_with_rejected_key={bad_keys} failures={}",
        failures.len()
    );
    assert!(valid + invalid > 0, "no Wycheproof vectors were run");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363() {
    run_wycheproof(Path::new(WYCHEPROOF_DIR));
}

const DEFAULT_SEED: u64 = 0x5eed_0256;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn be(hexstr: &str) -> [u8; 32] {
    arr32(&hex(hexstr))
}

const N_HEX: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
const P_HEX: &str = "ffffffff00000001000000000000000000000000ffffffffffffffffffffffff";

fn add_small(x: &[u8; 32], k: i64) -> [u8; 32] {
    let mut out = *x;
    let mut carry = k;
    for b in out.iter_mut().rev() {
        let v = *b as i64 + carry;
        *b = v.rem_euclid(256) as u8;
        carry = v.div_euclid(256);
    }
    out
}

fn special_scalars() -> Vec<[u8; 32]> {
    let n = be(N_HEX);
    let p = be(P_HEX);
    vec![
        [0u8; 32],
        add_small(&[0u8; 32], 1),
        add_small(&n, -1),
        n,
        add_small(&n, 1),
        add_small(&p, -1),
        p,
        [0xff; 32],
    ]
}

fn scalar(b: &[u8; 32]) -> Scalar {
    Option::<Scalar>::from(Scalar::from_repr((*b).into())).expect("canonical scalar")
}

fn scalar_bytes(s: &Scalar) -> [u8; 32] {
    arr32(s.to_repr().as_slice())
}

fn affine_coords(p: &ProjectivePoint) -> Option<([u8; 32], [u8; 32])> {
    let vk = VerifyingKey::from_affine(p.to_affine()).ok()?;
    let enc = vk.to_sec1_point(false);
    let b = enc.as_bytes();
    Some((arr32(&b[1..33]), arr32(&b[33..65])))
}

fn random_signing_key(rng: &mut StdRng) -> SigningKey {
    loop {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        if let Ok(k) = SigningKey::from_slice(&b) {
            return k;
        }
    }
}

#[test]
fn differential_against_p256_crate() {
    let seed = env_u64("PORTCULLIS_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_u64("PORTCULLIS_FUZZ_CASES").unwrap_or(3000);
    println!("differential: PORTCULLIS_FUZZ_SEED={seed} PORTCULLIS_FUZZ_CASES={cases}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checked = 0u64;
    let mut accepted = 0u64;
    let mut disagreements = Vec::new();
    // Key loads cost far more than a verification, so reuse the last key's table.
    // Every case also goes through a key loaded without a table (as for DPoP proofs).
    type Loaded = Option<(P256Public, P256Public)>;
    let mut cached: Option<([u8; 32], [u8; 32], Loaded)> = None;
    let mut check = |x: &[u8; 32], y: &[u8; 32], d: &[u8; 32], sig: &[u8], what: &str| {
        if !matches!(&cached, Some((cx, cy, _)) if cx == x && cy == y) {
            let loaded = match (
                P256Public::from_affine(x, y),
                P256Public::from_affine_one_shot(x, y),
            ) {
                (Some(a), Some(b)) => Some((a, b)),
                (None, None) => None,
                _ => panic!("key load differs by mode: x={x:02x?} y={y:02x?}"),
            };
            cached = Some((*x, *y, loaded));
        }
        let (a, a1) = match &cached {
            Some((_, _, Some((k, k1)))) => {
                (k.verify_prehashed(d, sig), k1.verify_prehashed(d, sig))
            }
            _ => (false, false),
        };
        assert_eq!(a, a1, "{what}: table and one-shot verdicts differ");
        let b = reference(x, y, d, sig);
        checked += 1;
        accepted += a as u64;
        if a != b {
            disagreements.push(format!(
                "{what}: ours={a} p256={b} x={x:02x?} y={y:02x?} d={d:02x?} sig={sig:02x?}"
            ));
        }
        a
    };

    let n = be(N_HEX);
    let specials = special_scalars();
    let mut key = random_signing_key(&mut rng);
    let (mut x, mut y) =
        affine_coords(&ProjectivePoint::from(*key.verifying_key().as_affine())).expect("coords");
    for case in 0..cases {
        if case % 50 == 0 {
            key = random_signing_key(&mut rng);
            (x, y) = affine_coords(&ProjectivePoint::from(*key.verifying_key().as_affine()))
                .expect("coords");
        }
        let mut d = [0u8; 32];
        rng.fill_bytes(&mut d);
        if rng.gen_ratio(1, 20) {
            // Digests ≥ n (reduced mod n), and a zero digest.
            d = match rng.gen_range(0..3) {
                0 => [0u8; 32],
                1 => n,
                _ => [0xff; 32],
            };
        }
        let sig: Signature = key.sign_prehash(&d).expect("sign");
        let sig = sig.to_bytes();
        let sig: [u8; 64] = sig.as_slice().try_into().expect("64");
        let _ = check(&x, &y, &d, &sig, "valid");

        // High-s: (r, n − s) is equally valid ECDSA.
        let s = scalar(&arr32(&sig[32..]));
        let mut hs = sig;
        hs[32..].copy_from_slice(&scalar_bytes(&-s));
        let _ = check(&x, &y, &d, &hs, "high-s");

        // Random single-bit flips in r, s, digest and key.
        let mut m = sig;
        let bit = rng.gen_range(0..512);
        m[bit / 8] ^= 1 << (bit % 8);
        let _ = check(&x, &y, &d, &m, "sig bit flip");
        let mut md = d;
        let bit = rng.gen_range(0..256);
        md[bit / 8] ^= 1 << (bit % 8);
        let _ = check(&x, &y, &md, &sig, "digest bit flip");
        let (mut mx, mut my) = (x, y);
        let bit = rng.gen_range(0..512);
        if bit < 256 {
            mx[bit / 8] ^= 1 << (bit % 8);
        } else {
            my[(bit - 256) / 8] ^= 1 << (bit % 8);
        }
        let _ = check(&mx, &my, &d, &sig, "key bit flip");
        // The negated key: same x, p − y, is on the curve but must not verify.
        if case % 10 == 0 {
            let neg = affine_coords(&-ProjectivePoint::from(*key.verifying_key().as_affine()))
                .expect("coords");
            let _ = check(&neg.0, &neg.1, &d, &sig, "negated key");
        }

        // r or s replaced by boundary values.
        let sp = specials[rng.gen_range(0..specials.len())];
        let mut m = sig;
        if rng.gen_bool(0.5) {
            m[..32].copy_from_slice(&sp);
        } else {
            m[32..].copy_from_slice(&sp);
        }
        let _ = check(&x, &y, &d, &m, "special r/s");

        // Wrong lengths.
        if case % 100 == 0 {
            let _ = check(&x, &y, &d, &sig[..63], "short sig");
            let mut long = sig.to_vec();
            long.push(0);
            let _ = check(&x, &y, &d, &long, "long sig");
        }

        // u1·G + u2·Q = identity: choose e = −r·d so that e + r·d ≡ 0.
        if case % 10 == 5 {
            let r = scalar(&arr32(&sig[..32]));
            let dk: Scalar = *key.as_nonzero_scalar().as_ref();
            let e = scalar_bytes(&-(r * dk));
            let _ = check(&x, &y, &e, &sig, "R = identity");
        }
    }

    // x(R) ≥ n: take points R with x ∈ [n, p) and keys Q = c·R + t·G; then
    // (r, s) = (x(R) − n, r·c) with e = −t·r verifies (u2 = c⁻¹, u1 = −t·c⁻¹).
    let mut big_x = 0;
    let mut xr = add_small(&n, 1);
    while big_x < 40 {
        xr = add_small(&xr, rng.gen_range(1..1_000_000));
        let mut comp = vec![2u8];
        comp.extend_from_slice(&xr);
        let Ok(rk) = VerifyingKey::from_sec1_bytes(&comp) else {
            continue;
        };
        big_x += 1;
        let rp = ProjectivePoint::from(*rk.as_affine());
        let c: Scalar = *random_signing_key(&mut rng).as_nonzero_scalar().as_ref();
        let t: Scalar = *random_signing_key(&mut rng).as_nonzero_scalar().as_ref();
        let q = rp * c + ProjectivePoint::GENERATOR * t;
        let (qx, qy) = affine_coords(&q).expect("coords");
        // r = x(R) − n (x(R) < p < 2n, so this is x(R) mod n).
        let mut rb = [0u8; 32];
        let mut borrow = 0i32;
        for i in (0..32).rev() {
            let v = xr[i] as i32 - n[i] as i32 - borrow;
            rb[i] = v.rem_euclid(256) as u8;
            borrow = (v < 0) as i32;
        }
        let r = scalar(&rb);
        let s = r * c;
        let e = scalar_bytes(&-(t * r));
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&rb);
        sig[32..].copy_from_slice(&scalar_bytes(&s));
        let ok = check(&qx, &qy, &e, &sig, "x(R) >= n valid");
        assert!(ok, "crafted x(R) >= n signature was not accepted");
        // Same with the unreduced x(R) as r: out of range, must be rejected.
        let mut sig2 = sig;
        sig2[..32].copy_from_slice(&xr);
        let _ = check(&qx, &qy, &e, &sig2, "r = x(R) >= n");
        // And with the high-s twin.
        let mut sig3 = sig;
        sig3[32..].copy_from_slice(&scalar_bytes(&-s));
        let _ = check(&qx, &qy, &e, &sig3, "x(R) >= n high-s");
    }

    println!(
        "differential: seed={seed} cases={cases} comparisons={checked} accepted={accepted} \
         disagreements={}",
        disagreements.len()
    );
    assert!(checked > 0);
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}
