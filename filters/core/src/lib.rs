//! Host-agnostic core shared by every Portcullis filter.
//!
//! Everything here is plain data and pure functions so it is unit-tested natively; only
//! [`host`] (compiled for wasm32 alone) talks to proxy-wasm. Filters build on:
//! - [`config`]: load the plugin configuration (JSON string or protobuf `Struct`) into
//!   `deny_unknown_fields` serde types, with errors that name the offending field;
//! - [`path`]: normalise a request path once, so no encoding trick dodges a rule;
//! - [`route`]: method + path matching (exact, prefix, `{param}` templates), first match wins;
//! - [`identity`]: the verified caller handed from authn to the later filters;
//! - [`audit`]: each filter's part of the per-request audit record, keyed hashes, and the
//!   denial summary that replaces one log line per denied request;
//! - [`deny`]: the one shape every filter denies with (status, reason code, problem+json);
//! - [`headers`]: a message's whole header map, names and values borrowed from one buffer;
//! - [`shared`]: the shared-data port and the one CAS loop every filter uses on it;
//! - [`slots`]: fixed-capacity, keyed-hash tables in shared data for state keyed by clients.

pub mod audit;
pub mod config;
pub mod deny;
pub mod headers;
pub mod identity;
pub mod json;

/// The first value of a header in a lower-cased header list (`:method`, `:path` included).
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Appends `n` in decimal: for values built on every request (header values, keys), where
/// `format!` machinery costs several times the digits themselves.
pub fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_decimal_writes_what_display_writes() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut s = String::from("x");
            super::push_decimal(&mut s, n);
            assert_eq!(s, format!("x{n}"));
        }
    }
}

pub mod path;
pub mod pbstruct;
pub mod route;
pub mod shared;
pub mod slots;
pub mod word;

pub mod metrics;
pub mod port;

#[cfg(target_arch = "wasm32")]
pub mod host;

#[cfg(not(target_arch = "wasm32"))]
pub mod fake;
