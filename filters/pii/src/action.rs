//! What happens to a value found to be personal data.

use crate::sha256::Sha256;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// How a tokenized value is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenFormat {
    /// `tok_` + 24 base64url characters (144 bits of HMAC-SHA-256).
    #[default]
    Opaque,
    /// Same length and separators as the value, every ASCII digit replaced by a keyed digit
    /// (`4111-1111-1111-1111` → `8302-5719-…`): fits columns that expect the original format.
    /// A pseudonym, not reversible encryption.
    Digits,
}

/// A masking action, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Replace with a placeholder.
    Redact {
        /// The replacement text.
        placeholder: String,
    },
    /// Keep some characters, mask the other letters and digits (separators kept).
    Partial {
        /// Letters/digits kept at the start.
        keep_first: usize,
        /// Letters/digits kept at the end.
        keep_last: usize,
        /// For e-mail addresses: keep the domain, mask the local part.
        keep_domain: bool,
        /// Replacement character.
        mask_char: char,
    },
    /// Keyed HMAC-SHA-256 pseudonym: stable per tenant key, so records can still be joined.
    Tokenize {
        /// Output format.
        format: TokenFormat,
        /// Domain-separation label (values of different classes never share a token).
        class: String,
        /// Prefix of opaque tokens.
        prefix: String,
    },
    /// Remove the member (field rules only).
    Drop,
}

/// A tenant's tokenization key, compiled: the HMAC-SHA-256 inner and outer states after the
/// key's padded block, computed once at configuration so that each tokenized value costs two
/// SHA-256 blocks instead of four. Tokens are exactly those of HMAC-SHA-256 over the key.
#[derive(Clone)]
pub struct TokenKey {
    inner: Sha256,
    outer: Sha256,
}

impl TokenKey {
    /// Compiles a key (RFC 2104: a key longer than a block is hashed first).
    pub fn new(key: &[u8]) -> Self {
        let hashed;
        let key = if key.len() > 64 {
            hashed = Sha256::digest(key);
            &hashed[..]
        } else {
            key
        };
        let mut ipad = [0x36u8; 64];
        let mut opad = [0x5cu8; 64];
        for ((i, o), k) in ipad.iter_mut().zip(opad.iter_mut()).zip(key) {
            *i ^= k;
            *o ^= k;
        }
        let mut inner = Sha256::new();
        inner.update(&ipad);
        let mut outer = Sha256::new();
        outer.update(&opad);
        TokenKey { inner, outer }
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // Most tokenized values (IBANs, e-mail addresses, card numbers) fit the inner hash's
        // one block after the key's; the outer hash is always one block.
        let inner = match self.inner.finalize_parts_in_one_block(parts) {
            Some(inner) => inner,
            None => {
                let mut h = self.inner.clone();
                for p in parts {
                    h.update(p);
                }
                h.finalize_words()
            }
        };
        self.outer.finalize_after_digest(inner)
    }
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key, nor states derived from it.
        f.write_str("TokenKey(..)")
    }
}

/// A tokenization key is needed and none is configured for the caller's tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoKey;

impl Action {
    /// The replacement text for `value`. `key` is the caller's tenant tokenization key.
    pub fn apply(&self, value: &str, key: Option<&TokenKey>) -> Result<String, NoKey> {
        let mut out = String::new();
        self.apply_into(value, key, &mut out)?;
        Ok(out)
    }

    /// [`Action::apply`], appending the replacement to `out`: a streaming caller reuses one
    /// buffer for every value instead of allocating a string for each.
    pub fn apply_into(
        &self,
        value: &str,
        key: Option<&TokenKey>,
        out: &mut String,
    ) -> Result<(), NoKey> {
        match self {
            Action::Redact { placeholder } => out.push_str(placeholder),
            Action::Drop => {}
            Action::Partial {
                keep_first,
                keep_last,
                keep_domain,
                mask_char,
            } => partial(
                value,
                *keep_first,
                *keep_last,
                *keep_domain,
                *mask_char,
                out,
            ),
            Action::Tokenize {
                format,
                class,
                prefix,
            } => {
                let key = key.ok_or(NoKey)?;
                tokenize(key, class, value, *format, prefix, out);
            }
        }
        Ok(())
    }
}

fn partial(
    value: &str,
    keep_first: usize,
    keep_last: usize,
    keep_domain: bool,
    mask: char,
    out: &mut String,
) {
    if keep_domain {
        if let Some(at) = value.rfind('@') {
            // Fixed-width local part: the length of the original is not revealed either.
            let domain = value.get(at..).unwrap_or_default();
            out.reserve(3 * mask.len_utf8() + domain.len());
            out.extend([mask; 3]);
            out.push_str(domain);
            return;
        }
    }
    if value.is_ascii() && mask.is_ascii() {
        partial_ascii(value.as_bytes(), keep_first, keep_last, mask as u8, out);
    } else {
        partial_chars(value, keep_first, keep_last, mask, out);
    }
}

/// [`partial`] of an ASCII value with an ASCII mask (every value the built-in rules mask, in
/// practice), byte by byte: for ASCII, `is_alphanumeric` is `is_ascii_alphanumeric`, and a
/// byte is written as a byte, not encoded as a `char` and pushed one at a time (which cost
/// several times the test of the byte itself).
fn partial_ascii(value: &[u8], keep_first: usize, keep_last: usize, mask: u8, out: &mut String) {
    let total = value.iter().filter(|c| c.is_ascii_alphanumeric()).count();
    let (kf, kl) = kept(keep_first, keep_last, total);
    let mut seen = 0usize;
    let mut bytes = std::mem::take(out).into_bytes();
    bytes.extend(value.iter().map(|&c| {
        if c.is_ascii_alphanumeric() {
            seen += 1;
            if seen > kf && seen <= total - kl {
                return mask;
            }
        }
        c
    }));
    // ASCII bytes added to a string stay a string; the lossy branch is never taken.
    *out = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
}

/// [`partial`] of any value: each character is kept or becomes `mask`.
fn partial_chars(value: &str, keep_first: usize, keep_last: usize, mask: char, out: &mut String) {
    out.reserve(value.len() * mask.len_utf8());
    let total = value.chars().filter(|c| c.is_alphanumeric()).count();
    let (kf, kl) = kept(keep_first, keep_last, total);
    let mut seen = 0usize;
    for c in value.chars() {
        if c.is_alphanumeric() {
            seen += 1;
            if seen > kf && seen <= total - kl {
                out.push(mask);
                continue;
            }
        }
        out.push(c);
    }
}

/// How many letters/digits a partial mask keeps at the start and the end of a value that has
/// `total`.
fn kept(keep_first: usize, keep_last: usize, total: usize) -> (usize, usize) {
    // Keeping as many characters as the value has would reveal all of it: mask everything.
    if keep_first + keep_last >= total {
        (0, 0)
    } else {
        (keep_first, keep_last)
    }
}

fn tokenize(
    key: &TokenKey,
    class: &str,
    value: &str,
    format: TokenFormat,
    prefix: &str,
    out: &mut String,
) {
    match format {
        TokenFormat::Opaque => {
            let mac = key.mac(&[
                b"portcullis-token-v1\0",
                class.as_bytes(),
                b"\0",
                value.as_bytes(),
            ]);
            out.reserve(prefix.len() + 24);
            out.push_str(prefix);
            URL_SAFE_NO_PAD.encode_string(&mac[..18], out);
        }
        TokenFormat::Digits => {
            // Digits are drawn from an HMAC stream (counter mode); the modulo bias (256 mod 10)
            // is irrelevant for a pseudonym.
            out.reserve(value.len());
            let mut block = [0u8; 32];
            let mut used = 32usize;
            let mut counter = 0u32;
            for c in value.chars() {
                if c.is_ascii_digit() {
                    if used == block.len() {
                        block = key.mac(&[
                            b"portcullis-digits-v1\0",
                            class.as_bytes(),
                            b"\0",
                            value.as_bytes(),
                            &counter.to_be_bytes(),
                        ]);
                        counter += 1;
                        used = 0;
                    }
                    let d = block.get(used).copied().unwrap_or(0) % 10;
                    used += 1;
                    out.push(char::from(b'0' + d));
                } else {
                    out.push(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial_of(v: &str, kf: usize, kl: usize, dom: bool) -> String {
        Action::Partial {
            keep_first: kf,
            keep_last: kl,
            keep_domain: dom,
            mask_char: '*',
        }
        .apply(v, None)
        .unwrap()
    }

    #[test]
    fn partial_masks_keep_format() {
        assert_eq!(
            partial_of("4111 1111 1111 1111", 0, 4, false),
            "**** **** **** 1111"
        );
        assert_eq!(partial_of("123-45-6789", 0, 4, false), "***-**-6789");
        assert_eq!(
            partial_of("ada@acme.example.com", 0, 0, true),
            "***@acme.example.com"
        );
        assert_eq!(
            partial_of("+1-555-123-4567", 4, 0, false),
            "+1-555-***-****"
        );
        // Keeping everything would reveal everything.
        assert_eq!(partial_of("1234", 0, 4, false), "****");
        assert_eq!(
            Action::Partial {
                keep_first: 4,
                keep_last: 0,
                keep_domain: false,
                mask_char: 'X'
            }
            .apply("+1-555-123-4567", None)
            .unwrap(),
            "+1-555-XXX-XXXX"
        );
    }

    /// The byte path of partial masks writes what the character path writes, for ASCII
    /// values of every mix of letters, digits and separators, appended to what `out` held.
    #[test]
    fn ascii_partial_masks_agree_with_the_char_path() {
        let alphabet = b"aZ09-+ @.x_(/7";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for n in 0..400usize {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = n % 24;
            let value: String = (0..len)
                .map(|i| char::from(alphabet[((seed >> (i % 60)) as usize + i) % alphabet.len()]))
                .collect();
            for (kf, kl) in [(0, 0), (0, 4), (4, 0), (2, 3), (30, 0), (1, 1)] {
                for mask in ['*', 'X', '#'] {
                    let mut fast = String::from("prefix\u{e9}");
                    partial_ascii(value.as_bytes(), kf, kl, mask as u8, &mut fast);
                    let mut slow = String::from("prefix\u{e9}");
                    partial_chars(&value, kf, kl, mask, &mut slow);
                    assert_eq!(fast, slow, "{value:?} {kf} {kl} {mask}");
                }
            }
        }
    }

    #[test]
    fn tokens_are_keyed_stable_and_separated() {
        let t = |key: &[u8], class: &str, v: &str, f| {
            Action::Tokenize {
                format: f,
                class: class.into(),
                prefix: "tok_".into(),
            }
            .apply(v, Some(&TokenKey::new(key)))
            .unwrap()
        };
        let a = t(
            b"key-of-tenant-acme-0123456789",
            "email",
            "ada@x.com",
            TokenFormat::Opaque,
        );
        assert_eq!(
            a,
            t(
                b"key-of-tenant-acme-0123456789",
                "email",
                "ada@x.com",
                TokenFormat::Opaque
            )
        );
        assert!(a.starts_with("tok_") && a.len() == 28);
        assert_ne!(
            a,
            t(
                b"key-of-tenant-globex-01234567",
                "email",
                "ada@x.com",
                TokenFormat::Opaque
            )
        );
        assert_ne!(
            a,
            t(
                b"key-of-tenant-acme-0123456789",
                "other",
                "ada@x.com",
                TokenFormat::Opaque
            )
        );
        let d = t(
            b"k0123456789abcdef",
            "card",
            "4111-1111-1111-1111",
            TokenFormat::Digits,
        );
        assert_eq!(d.len(), 19);
        assert_eq!(d.as_bytes()[4], b'-');
        assert_ne!(d, "4111-1111-1111-1111");
        assert_eq!(
            Action::Tokenize {
                format: TokenFormat::Opaque,
                class: String::new(),
                prefix: String::new()
            }
            .apply("x", None),
            Err(NoKey)
        );
    }

    /// The compiled key gives exactly plain HMAC-SHA-256 over the key (short, block-sized and
    /// longer-than-a-block keys): tokens already handed out stay valid.
    #[test]
    fn compiled_keys_give_plain_hmac() {
        for key in [&b"k0123456789abcdef"[..], &[7u8; 64][..], &[9u8; 100][..]] {
            let msg = [
                &b"portcullis-token-v1\0"[..],
                b"iban",
                b"\0",
                b"DE89370400440532013000",
            ];
            let plain = portcullis_core::audit::hmac_sha256(key, &msg);
            assert_eq!(TokenKey::new(key).mac(&msg), plain);
        }
        // Generated keys around the block size and values across block boundaries, against
        // the `sha2` HMAC.
        for key_len in (16..=80).step_by(4).chain([127, 128, 129, 200]) {
            let key: Vec<u8> = (0..key_len).map(|i| (i * 37 + key_len) as u8).collect();
            let compiled = TokenKey::new(&key);
            for len in (0..=140).chain([511, 512, 513]) {
                let value: Vec<u8> = (0..len).map(|i| (i * 11 + 3) as u8).collect();
                let msg = [&b"portcullis-token-v1\0"[..], b"class", b"\0", &value];
                assert_eq!(
                    compiled.mac(&msg),
                    portcullis_core::audit::hmac_sha256(&key, &msg),
                    "key {key_len} bytes, value {len} bytes"
                );
            }
        }
        // Pinned: an opaque and a digits token of a fixed key.
        let t = |f| {
            Action::Tokenize {
                format: f,
                class: "iban".into(),
                prefix: "tok_".into(),
            }
            .apply(
                "DE89370400440532013000",
                Some(&TokenKey::new(b"k0123456789abcdef")),
            )
            .unwrap()
        };
        assert_eq!(t(TokenFormat::Opaque), "tok_aLj0ir982HeUXaOATNSnmHw8");
        assert_eq!(t(TokenFormat::Digits), "DE71690771964490617567");
    }
}
