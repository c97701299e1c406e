#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `rsa_fast` against Wycheproof and, differentially, against the `rsa` crate it replaces.
//!
//! Speed check (needs optimisation, so run it in release; see `speed`):
//! `cargo test --release -p portcullis-jose --test rsa_fast -- --ignored --nocapture`

use std::path::{Path, PathBuf};
use std::time::Instant;

use portcullis_jose::rsa_fast::{self, Hash, RsaPublic};
use rand::{Rng, RngCore, SeedableRng};
use rsa::signature::Verifier;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};

const WYCHEPROOF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/testdata/wycheproof/"
);

const PKCS1_FILES: [(&str, Hash); 5] = [
    ("rsa_signature_2048_sha256_test.json", Hash::Sha256),
    ("rsa_signature_2048_sha384_test.json", Hash::Sha384),
    ("rsa_signature_2048_sha512_test.json", Hash::Sha512),
    ("rsa_signature_3072_sha256_test.json", Hash::Sha256),
    ("rsa_signature_4096_sha256_test.json", Hash::Sha256),
];
const PSS_FILES: [(&str, Hash); 1] = [("rsa_pss_2048_sha256_mgf1_32_test.json", Hash::Sha256)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Pkcs1,
    Pss,
}

fn hex(s: &str) -> Vec<u8> {
    portcullis_jose::wycheproof::hex(s).unwrap_or_else(|| panic!("not hex: {s}"))
}

fn fast_verify(key: &RsaPublic, scheme: Scheme, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
    match scheme {
        Scheme::Pkcs1 => rsa_fast::verify_pkcs1v15(key, hash, msg, sig),
        Scheme::Pss => rsa_fast::verify_pss(key, hash, msg, sig),
    }
}

/// The `rsa` crate's verdict, through the APIs that check RFC 8017's `s < n`: `Pkcs1v15Sign`
/// (the call the filter made before `rsa_fast`) and `pss::VerifyingKey` (salt length = hash length).
fn reference_verify(
    key: &RsaPublicKey,
    scheme: Scheme,
    hash: Hash,
    msg: &[u8],
    sig: &[u8],
) -> bool {
    match scheme {
        Scheme::Pkcs1 => {
            let (padding, hashed) = match hash {
                Hash::Sha256 => (Pkcs1v15Sign::new::<Sha256>(), Sha256::digest(msg).to_vec()),
                Hash::Sha384 => (Pkcs1v15Sign::new::<Sha384>(), Sha384::digest(msg).to_vec()),
                Hash::Sha512 => (Pkcs1v15Sign::new::<Sha512>(), Sha512::digest(msg).to_vec()),
            };
            key.verify(padding, &hashed, sig).is_ok()
        }
        Scheme::Pss => {
            let sig = rsa::pss::Signature::try_from(sig).expect("any bytes");
            let key = key.clone();
            match hash {
                Hash::Sha256 => rsa::pss::VerifyingKey::<Sha256>::new(key).verify(msg, &sig),
                Hash::Sha384 => rsa::pss::VerifyingKey::<Sha384>::new(key).verify(msg, &sig),
                Hash::Sha512 => rsa::pss::VerifyingKey::<Sha512>::new(key).verify(msg, &sig),
            }
            .is_ok()
        }
    }
}

/// The `rsa` crate's PSS verdict through `RsaPublicKey::verify(Pss::new::<D>(), ..)`, the call
/// the filter made before `rsa_fast`. Unlike `pss::VerifyingKey`, this path does not reject `s >= n`.
fn reference_pss_scheme(key: &RsaPublicKey, hash: Hash, msg: &[u8], sig: &[u8]) -> bool {
    match hash {
        Hash::Sha256 => key.verify(Pss::new::<Sha256>(), &Sha256::digest(msg), sig),
        Hash::Sha384 => key.verify(Pss::new::<Sha384>(), &Sha384::digest(msg), sig),
        Hash::Sha512 => key.verify(Pss::new::<Sha512>(), &Sha512::digest(msg), sig),
    }
    .is_ok()
}

fn wycheproof_dir() -> Option<PathBuf> {
    let dir = Path::new(WYCHEPROOF);
    if dir.is_dir() {
        return Some(dir.to_path_buf());
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("Wycheproof test vectors not found at {WYCHEPROOF} (required when CI=true)");
    }
    eprintln!("skipping: Wycheproof test vectors not found at {WYCHEPROOF} (set CI=true to make this fatal)");
    None
}

#[derive(Default, Debug)]
struct Counts {
    valid: usize,
    invalid: usize,
    acceptable: usize,
    acceptable_accepted: usize,
    passed: usize,
}

#[test]
fn wycheproof() {
    let Some(dir) = wycheproof_dir() else {
        return;
    };
    let files = PKCS1_FILES
        .iter()
        .map(|&(f, h)| (f, h, Scheme::Pkcs1))
        .chain(PSS_FILES.iter().map(|&(f, h)| (f, h, Scheme::Pss)));
    let mut total = Counts::default();
    let mut failures = Vec::new();
    let mut crate_disagreements = Vec::new();
    for (file, hash, scheme) in files {
        let text = std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|e| panic!("reading {file}: {e}"));
        let json: Value = serde_json::from_str(&text).expect("JSON");
        let mut counts = Counts::default();
        for group in json["testGroups"].as_array().expect("testGroups") {
            if scheme == Scheme::Pss {
                // Only what JWS PS256 uses: MGF1 over the same hash, salt length = hash length.
                assert_eq!(group["mgf"], "MGF1", "{file}");
                assert_eq!(group["mgfSha"], group["sha"], "{file}");
                assert_eq!(group["sLen"], 32, "{file}");
            }
            let pk = &group["publicKey"];
            let n = hex(pk["modulus"].as_str().expect("modulus"));
            let e = hex(pk["publicExponent"].as_str().expect("publicExponent"));
            let key = RsaPublic::new(&n, &e).unwrap_or_else(|| panic!("{file}: key rejected"));
            assert_eq!(
                key.bits() as u64,
                group["keySize"].as_u64().expect("keySize"),
                "{file}"
            );
            let reference =
                RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e))
                    .expect("rsa crate key");
            for test in group["tests"].as_array().expect("tests") {
                let id = test["tcId"].as_u64().expect("tcId");
                let comment = test["comment"].as_str().unwrap_or("");
                let msg = hex(test["msg"].as_str().expect("msg"));
                let sig = hex(test["sig"].as_str().expect("sig"));
                let result = test["result"].as_str().expect("result");
                let got = fast_verify(&key, scheme, hash, &msg, &sig);
                let theirs = reference_verify(&reference, scheme, hash, &msg, &sig);
                let ok = match result {
                    "valid" => {
                        counts.valid += 1;
                        got
                    }
                    "invalid" => {
                        counts.invalid += 1;
                        !got
                    }
                    "acceptable" => {
                        counts.acceptable += 1;
                        counts.acceptable_accepted += usize::from(got);
                        got == theirs
                    }
                    other => panic!("{file} tcId {id}: unknown result {other:?}"),
                };
                if ok {
                    counts.passed += 1;
                } else {
                    failures.push(format!(
                        "{file} tcId {id} ({result}, {comment:?}): rsa_fast says {got}, rsa crate says {theirs}"
                    ));
                }
                if result != "acceptable" && theirs != (result == "valid") {
                    crate_disagreements.push(format!("{file} tcId {id} ({result}, {comment:?})"));
                }
                if scheme == Scheme::Pss
                    && reference_pss_scheme(&reference, hash, &msg, &sig) != theirs
                {
                    crate_disagreements.push(format!(
                        "{file} tcId {id} ({result}, {comment:?}): rsa::Pss scheme (the former filter path) says {}",
                        !theirs
                    ));
                }
            }
        }
        eprintln!(
            "{file}: {} valid, {} invalid, {} acceptable ({} accepted); {} of {} pass",
            counts.valid,
            counts.invalid,
            counts.acceptable,
            counts.acceptable_accepted,
            counts.passed,
            counts.valid + counts.invalid + counts.acceptable
        );
        let declared = json["numberOfTests"].as_u64().expect("numberOfTests") as usize;
        assert_eq!(
            counts.valid + counts.invalid + counts.acceptable,
            declared,
            "{file}: test count"
        );
        total.valid += counts.valid;
        total.invalid += counts.invalid;
        total.acceptable += counts.acceptable;
        total.acceptable_accepted += counts.acceptable_accepted;
        total.passed += counts.passed;
    }
    eprintln!(
        "Wycheproof total: {} valid, {} invalid, {} acceptable ({} accepted, same as the rsa crate); {} pass",
        total.valid, total.invalid, total.acceptable, total.acceptable_accepted, total.passed
    );
    for d in &crate_disagreements {
        eprintln!("note: the rsa crate disagrees with Wycheproof on {d}");
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(total.valid + total.invalid + total.acceptable, total.passed);
}

fn seed() -> u64 {
    let seed = std::env::var("RSA_FAST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2024_0b5e_55ed);
    eprintln!("seed {seed} (override with RSA_FAST_SEED)");
    seed
}

fn be_pad(x: &BigUint, len: usize) -> Option<Vec<u8>> {
    let b = x.to_bytes_be();
    if b.len() > len {
        return None;
    }
    let mut out = vec![0u8; len - b.len()];
    out.extend(b);
    Some(out)
}

fn sign(
    key: &RsaPrivateKey,
    scheme: Scheme,
    hash: Hash,
    msg: &[u8],
    rng: &mut rand::rngs::StdRng,
) -> Vec<u8> {
    let hashed = match hash {
        Hash::Sha256 => Sha256::digest(msg).to_vec(),
        Hash::Sha384 => Sha384::digest(msg).to_vec(),
        Hash::Sha512 => Sha512::digest(msg).to_vec(),
    };
    match (scheme, hash) {
        (Scheme::Pkcs1, Hash::Sha256) => key.sign(Pkcs1v15Sign::new::<Sha256>(), &hashed),
        (Scheme::Pkcs1, Hash::Sha384) => key.sign(Pkcs1v15Sign::new::<Sha384>(), &hashed),
        (Scheme::Pkcs1, Hash::Sha512) => key.sign(Pkcs1v15Sign::new::<Sha512>(), &hashed),
        // Salt length = hash length (Pss::new's default), blinded.
        (Scheme::Pss, Hash::Sha256) => {
            key.sign_with_rng(rng, Pss::new_blinded::<Sha256>(), &hashed)
        }
        (Scheme::Pss, Hash::Sha384) => {
            key.sign_with_rng(rng, Pss::new_blinded::<Sha384>(), &hashed)
        }
        (Scheme::Pss, Hash::Sha512) => {
            key.sign_with_rng(rng, Pss::new_blinded::<Sha512>(), &hashed)
        }
    }
    .expect("sign")
}

struct Case {
    what: &'static str,
    scheme: Scheme,
    hash: Hash,
    msg: Vec<u8>,
    sig: Vec<u8>,
}

/// The signature itself, then mutations of it that must (almost all) fail.
fn cases(
    n: &BigUint,
    k: usize,
    scheme: Scheme,
    hash: Hash,
    msg: &[u8],
    sig: &[u8],
    rng: &mut rand::rngs::StdRng,
) -> Vec<Case> {
    let case = |what, sig: Vec<u8>| Case {
        what,
        scheme,
        hash,
        msg: msg.to_vec(),
        sig,
    };
    let mut out = vec![case("original", sig.to_vec())];
    let mut s = sig.to_vec();
    let bit = rng.gen_range(0..8 * k);
    s[bit / 8] ^= 1 << (bit % 8);
    out.push(case("random sig bit flipped", s));
    let mut s = sig.to_vec();
    s[0] ^= 1 << rng.gen_range(0..8);
    out.push(case("sig top byte bit flipped", s));
    let mut s = sig.to_vec();
    s[k - 1] ^= 1;
    out.push(case("sig low bit flipped", s));

    let mut m = msg.to_vec();
    if m.is_empty() {
        m.push(0);
    } else {
        let bit = rng.gen_range(0..8 * m.len());
        m[bit / 8] ^= 1 << (bit % 8);
    }
    out.push(Case {
        what: "msg bit flipped",
        scheme,
        hash,
        msg: m,
        sig: sig.to_vec(),
    });
    let mut m = msg.to_vec();
    m.push(0);
    out.push(Case {
        what: "msg extended",
        scheme,
        hash,
        msg: m,
        sig: sig.to_vec(),
    });
    let other_hash = match hash {
        Hash::Sha256 => Hash::Sha384,
        Hash::Sha384 => Hash::Sha512,
        Hash::Sha512 => Hash::Sha256,
    };
    out.push(Case {
        what: "wrong hash",
        scheme,
        hash: other_hash,
        msg: msg.to_vec(),
        sig: sig.to_vec(),
    });
    out.push(Case {
        what: "wrong scheme",
        scheme: match scheme {
            Scheme::Pkcs1 => Scheme::Pss,
            Scheme::Pss => Scheme::Pkcs1,
        },
        hash,
        msg: msg.to_vec(),
        sig: sig.to_vec(),
    });

    out.push(case("truncated", sig[..k - 1].to_vec()));
    out.push(case("first byte removed", sig[1..].to_vec()));
    let mut s = vec![0u8];
    s.extend_from_slice(sig);
    out.push(case("leading zero added", s));
    let mut s = sig.to_vec();
    s.push(0);
    out.push(case("trailing zero appended", s));
    out.push(case("empty", Vec::new()));

    let sig_int = BigUint::from_bytes_be(sig);
    let one = BigUint::from(1u32);
    out.push(case("zero", vec![0u8; k]));
    out.push(case("one", be_pad(&one, k).unwrap()));
    out.push(case("n - 1", be_pad(&(n - &one), k).unwrap()));
    out.push(case("n", be_pad(n, k).unwrap()));
    if let Some(s) = be_pad(&(n + &one), k) {
        out.push(case("n + 1", s));
    }
    if let Some(s) = be_pad(&(&sig_int + n), k) {
        out.push(case("sig + n (not reduced)", s));
    }
    out.push(case("all ff", vec![0xff; k]));
    let mut s = vec![0u8; k];
    rng.fill_bytes(&mut s);
    s[0] = 0;
    out.push(case("random below n", s));
    out
}

#[test]
fn differential_against_rsa_crate() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed());
    let started = Instant::now();
    let mut total = 0usize;
    let mut accepted = 0usize;
    let mut unreduced_pss = 0usize;
    let mut mismatches = Vec::new();
    // 2057 bits: modBits - 1 is a multiple of 8, so the PSS encoded message is one byte
    // shorter than the signature (and about half of all signatures have a leading zero byte).
    for (bits, messages) in [(2048usize, 8usize), (2057, 6), (3072, 5)] {
        let t = Instant::now();
        let private = loop {
            let key = RsaPrivateKey::new(&mut rng, bits).expect("keygen");
            if key.n().bits() == bits {
                break key;
            }
        };
        let public = private.to_public_key();
        let n = public.n().clone();
        let k = public.size();
        let fast = RsaPublic::new(&n.to_bytes_be(), &public.e().to_bytes_be()).expect("key");
        assert_eq!((fast.bits(), fast.size()), (bits, k));
        eprintln!("{bits}-bit key generated in {:?}", t.elapsed());
        for scheme in [Scheme::Pkcs1, Scheme::Pss] {
            for hash in [Hash::Sha256, Hash::Sha384, Hash::Sha512] {
                for _ in 0..messages {
                    let len = rng.gen_range(0..200);
                    let mut msg = vec![0u8; len];
                    rng.fill_bytes(&mut msg);
                    let sig = sign(&private, scheme, hash, &msg, &mut rng);
                    assert_eq!(sig.len(), k);
                    for c in cases(&n, k, scheme, hash, &msg, &sig, &mut rng) {
                        let got = fast_verify(&fast, c.scheme, c.hash, &c.msg, &c.sig);
                        let want = reference_verify(&public, c.scheme, c.hash, &c.msg, &c.sig);
                        total += 1;
                        accepted += usize::from(got);
                        if c.what == "original" {
                            assert!(
                                want,
                                "{bits} {scheme:?} {hash:?}: rsa crate rejects its own signature"
                            );
                        }
                        if got != want {
                            mismatches.push(format!(
                                "{bits}-bit {:?} {:?} {}: rsa_fast {got}, rsa crate {want}",
                                c.scheme, c.hash, c.what
                            ));
                        }
                        if c.scheme == Scheme::Pss {
                            let scheme_says = reference_pss_scheme(&public, c.hash, &c.msg, &c.sig);
                            if scheme_says != want {
                                // Only the unreduced signature may differ (see reference_pss_scheme).
                                assert_eq!(
                                    c.what, "sig + n (not reduced)",
                                    "{bits}-bit {:?}",
                                    c.hash
                                );
                                unreduced_pss += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "differential: {total} cases ({accepted} accepted), {} mismatches, in {:?}",
        mismatches.len(),
        started.elapsed()
    );
    if unreduced_pss > 0 {
        eprintln!(
            "note: rsa::Pss (the RsaPublicKey::verify path) accepted {unreduced_pss} unreduced PSS signatures (s + n) that pss::VerifyingKey and rsa_fast reject"
        );
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    assert!(total >= 2000, "only {total} cases");
}

#[derive(Clone, Copy, Debug)]
enum Shape {
    /// Random bits between the forced top and bottom bits.
    Random,
    /// `2^bits - 1`: every limb at its maximum, the worst case for the accumulator bounds.
    AllOnes,
    /// `2^(bits-1) + 1`: the smallest modulus of that size.
    Smallest,
}

fn odd_modulus(bits: usize, shape: Shape, rng: &mut rand::rngs::StdRng) -> Vec<u8> {
    let k = bits.div_ceil(8);
    let mut n = vec![0u8; k];
    match shape {
        Shape::Random => rng.fill_bytes(&mut n),
        Shape::AllOnes => n.fill(0xff),
        Shape::Smallest => {}
    }
    let top_bits = bits - 8 * (k - 1); // 1..=8
    n[0] &= 0xff >> (8 - top_bits);
    n[0] |= 1 << (top_bits - 1);
    n[k - 1] |= 1;
    n
}

#[test]
fn public_op_matches_modpow() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed() ^ 0x6d6f_6470_6f77);
    let mut total = 0usize;
    let sizes = [
        512usize, 1024, 1025, 1056, 1535, 2047, 2048, 2049, 2056, 3072, 4095, 4096,
    ]
    .into_iter()
    .flat_map(|bits| {
        [
            (bits, Shape::Random),
            (bits, Shape::AllOnes),
            (bits, Shape::Smallest),
        ]
    })
    // Limb widths 27 and 26 at the top of the range (see rsa_fast::limb_width); slow in debug
    // builds, so only the worst-case shape, e = 65537 and a few inputs.
    .chain([(8192, Shape::AllOnes), (16_384, Shape::AllOnes)]);
    for (bits, shape) in sizes {
        // Any odd modulus will do for the arithmetic; it need not be an RSA key.
        let n_bytes = odd_modulus(bits, shape, &mut rng);
        let k = n_bytes.len();
        let n = BigUint::from_bytes_be(&n_bytes);
        assert_eq!(n.bits(), bits);

        let random_odd = |rng: &mut rand::rngs::StdRng, bytes: usize| {
            let mut e = vec![0u8; bytes];
            rng.fill_bytes(&mut e);
            e[0] |= 0x80;
            e[bytes - 1] |= 1;
            e
        };
        let exponents: Vec<Vec<u8>> = match shape {
            _ if bits > 4096 => vec![vec![1, 0, 1]],
            Shape::Random => vec![
                vec![3],
                vec![17],
                vec![1, 0, 1],
                random_odd(&mut rng, 4),
                random_odd(&mut rng, 8),
                random_odd(&mut rng, 32),
                vec![0xff; 4],
            ],
            Shape::AllOnes | Shape::Smallest => vec![vec![3], vec![1, 0, 1], vec![0xff; 4]],
        };
        for e in exponents {
            let key = RsaPublic::new(&n_bytes, &e).expect("key");
            assert_eq!((key.bits(), key.size()), (bits, k));
            let e_int = BigUint::from_bytes_be(&e);
            let one = BigUint::from(1u32);
            let mut inputs = vec![
                BigUint::from(0u32),
                one.clone(),
                BigUint::from(2u32),
                &n - &one,
                &n - BigUint::from(2u32),
            ];
            if bits > 4096 {
                inputs.truncate(2);
                inputs.push(&n - &one);
            }
            for _ in 0..if bits > 4096 { 1 } else { 4 } {
                let mut s = vec![0u8; k];
                rng.fill_bytes(&mut s);
                let s = BigUint::from_bytes_be(&s) % &n;
                inputs.push(s);
            }
            for s in inputs {
                let got = key.public_op(&be_pad(&s, k).unwrap()).expect("s < n");
                let want = be_pad(&s.modpow(&e_int, &n), k).unwrap();
                assert_eq!(got, want, "{bits}-bit {shape:?} n, e = {e_int}, s = {s}");
                total += 1;
            }
            // s >= n is refused.
            assert!(key.public_op(&n_bytes).is_none());
        }
    }
    eprintln!("public_op vs BigUint::modpow: {total} cases");
}

/// Modulus, exponent, message, signature.
type Vector = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

fn wycheproof_vector(file: &str, tc_id: u64) -> Option<Vector> {
    let dir = wycheproof_dir()?;
    let json: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(file)).ok()?).ok()?;
    for group in json["testGroups"].as_array()? {
        for test in group["tests"].as_array()? {
            if test["tcId"].as_u64() == Some(tc_id) {
                let pk = &group["publicKey"];
                return Some((
                    hex(pk["modulus"].as_str()?),
                    hex(pk["publicExponent"].as_str()?),
                    hex(test["msg"].as_str()?),
                    hex(test["sig"].as_str()?),
                ));
            }
        }
    }
    None
}

/// Best per-call time in µs over `batches` batches of `per_batch` calls (the minimum filters
/// out interference from other load on the machine), after a warm-up batch (in V8, lets the
/// optimising tier take over from the baseline compiler).
fn best_us(batches: u32, per_batch: u32, mut f: impl FnMut()) -> f64 {
    for _ in 0..per_batch {
        f();
    }
    (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / f64::from(per_batch)
        })
        .fold(f64::MAX, f64::min)
}

/// Speed check: µs per verify (hashing included) for rsa_fast and the rsa crate. 1000 verifies
/// per implementation and key, reported as the best of 20 batches of 50.
/// Native: `cargo test --release -p portcullis-jose --test rsa_fast -- --ignored --nocapture`;
/// the same test binary built for wasm32-wasip1 runs under any WASI runtime (V8: node's WASI).
#[test]
#[ignore = "timing; run with --release -- --ignored --nocapture"]
fn speed() {
    for (file, scheme) in [
        ("rsa_signature_2048_sha256_test.json", Scheme::Pkcs1),
        ("rsa_pss_2048_sha256_mgf1_32_test.json", Scheme::Pss),
        ("rsa_signature_3072_sha256_test.json", Scheme::Pkcs1),
        ("rsa_signature_4096_sha256_test.json", Scheme::Pkcs1),
    ] {
        let Some((n, e, msg, sig)) = wycheproof_vector(file, 1) else {
            return;
        };
        let fast = RsaPublic::new(&n, &e).expect("key");
        let reference =
            RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).expect("key");
        let hash = Hash::Sha256;
        let fast_us = best_us(20, 50, || {
            assert!(fast_verify(
                std::hint::black_box(&fast),
                scheme,
                hash,
                &msg,
                &sig
            ));
        });
        let new_us = best_us(20, 50, || {
            assert!(RsaPublic::new(std::hint::black_box(&n), &e).is_some());
        });
        let ref_us = best_us(20, 50, || {
            assert!(reference_verify(
                std::hint::black_box(&reference),
                scheme,
                hash,
                &msg,
                &sig
            ));
        });
        eprintln!(
            "{file} ({scheme:?}, {} bits): rsa_fast {fast_us:.1} µs/verify (RsaPublic::new {new_us:.1} µs), rsa crate {ref_us:.1} µs/verify, {:.1}x",
            fast.bits(),
            ref_us / fast_us
        );
    }
}
