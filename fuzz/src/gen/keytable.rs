//! API key tables (`authn::keytable`): small random key lists encoded by the CLI's encoder, and
//! mutations that go for the header counts, offsets and order as well as any byte.

use crate::mutate;
use crate::rng::Rng;
use portcullis_authn::config::RawApiKey;
use portcullis_authn::keytable::KeyTable;

const WORDS: &[&str] = &[
    "",
    "acme",
    "globex",
    "customers:read",
    "admin",
    "gold",
    "é",
    "k",
];

fn word(rng: &mut Rng) -> String {
    let w = rng.pick(WORDS).copied().unwrap_or("x");
    if rng.chance(1, 3) {
        format!("{w}{}", rng.below(50))
    } else {
        w.to_string()
    }
}

fn list(rng: &mut Rng) -> Vec<String> {
    (0..rng.below(4)).map(|_| word(rng)).collect()
}

/// A table of up to a dozen keys (some disabled, some sharing a profile).
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let n = rng.below(12);
    let keys: Vec<RawApiKey> = (0..n)
        .map(|i| RawApiKey {
            id: format!("k{i}"),
            sha256: (0..32).map(|_| format!("{:02x}", rng.byte())).collect(),
            prefix: None,
            app: word(rng),
            tenant: rng.chance(2, 3).then(|| word(rng)),
            scopes: list(rng),
            roles: list(rng),
            tier: rng.chance(1, 2).then(|| word(rng)),
            disabled: rng.chance(1, 6),
        })
        .collect();
    KeyTable::encode(&keys).unwrap_or_default()
}

/// Byte mutations, plus a 32-bit word of the header or a record set to a hostile value.
pub fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    if rng.chance(1, 3) && input.len() >= 4 {
        let mut out = input.to_vec();
        let at = rng.below(out.len() - 3);
        let v: u32 = match rng.below(5) {
            0 => 0,
            1 => u32::MAX,
            2 => u32::MAX - 1,
            3 => u32::try_from(input.len()).unwrap_or(0),
            _ => u32::try_from(rng.below(64)).unwrap_or(0),
        };
        if let Some(w) = out.get_mut(at..at + 4) {
            w.copy_from_slice(&v.to_le_bytes());
        }
        return out;
    }
    mutate::bytes(rng, input, &[b"PCAK", &[1, 0, 0, 0], &[0xff; 4], &[0; 4]])
}

/// Seeds: the empty table, one key, and a few generated ones.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(0x6b65_7973);
    let mut out = vec![KeyTable::encode(&[]).unwrap_or_default()];
    out.extend((0..6).map(|_| generate(&mut rng)));
    out
}
