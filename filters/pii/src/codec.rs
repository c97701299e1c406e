//! Content codings: decoding what the upstream compressed despite `Accept-Encoding: identity`,
//! with a size cap and a ratio cap (a zip bomb stops at the cap, it is never inflated fully).

use std::io::Read;

/// A content coding we can decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// gzip (RFC 1952), multi-member allowed.
    Gzip,
    /// deflate: zlib-wrapped as RFC 9110 says, or raw deflate as some servers send.
    Deflate,
    /// Brotli (RFC 7932).
    Br,
}

/// Why a body cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// A coding we do not implement (zstd, compress…): never passed on unmasked.
    Unsupported,
    /// Decoded size over the cap or the ratio cap.
    TooLarge,
    /// Not valid data in that coding.
    Corrupt,
}

/// Parses a `Content-Encoding` value into the codings applied, in order. `identity` and empty
/// entries are ignored; anything unknown is an error.
pub fn parse_codings(value: Option<&str>) -> Result<Vec<Coding>, DecodeError> {
    let Some(v) = value else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for c in v.split(',').map(|c| c.trim().to_ascii_lowercase()) {
        match c.as_str() {
            "" | "identity" => {}
            "gzip" | "x-gzip" => out.push(Coding::Gzip),
            "deflate" => out.push(Coding::Deflate),
            "br" => out.push(Coding::Br),
            _ => return Err(DecodeError::Unsupported),
        }
    }
    Ok(out)
}

fn read_capped(mut r: impl Read, cap: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    (&mut r)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| DecodeError::Corrupt)?;
    if out.len() > cap {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

fn decode_one(coding: Coding, data: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
    match coding {
        Coding::Gzip => read_capped(flate2::read::MultiGzDecoder::new(data), cap),
        Coding::Deflate => match read_capped(flate2::read::ZlibDecoder::new(data), cap) {
            Err(DecodeError::Corrupt) => read_capped(flate2::read::DeflateDecoder::new(data), cap),
            other => other,
        },
        Coding::Br => read_capped(brotli_decompressor::Decompressor::new(data, 4096), cap),
    }
}

/// Undoes `codings` (applied in order, so removed in reverse). The output may be at most
/// `max_bytes` and at most `max_ratio` times the input.
pub fn decode(
    codings: &[Coding],
    body: &[u8],
    max_bytes: usize,
    max_ratio: usize,
) -> Result<Vec<u8>, DecodeError> {
    let cap = max_bytes.min(body.len().max(1).saturating_mul(max_ratio));
    let mut data = body.to_vec();
    for &c in codings.iter().rev() {
        data = decode_one(c, &data, cap)?;
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codings_parse() {
        assert_eq!(parse_codings(None), Ok(vec![]));
        assert_eq!(parse_codings(Some("GZIP")), Ok(vec![Coding::Gzip]));
        assert_eq!(
            parse_codings(Some("deflate, br")),
            Ok(vec![Coding::Deflate, Coding::Br])
        );
        assert_eq!(parse_codings(Some("identity")), Ok(vec![]));
        assert_eq!(parse_codings(Some("zstd")), Err(DecodeError::Unsupported));
        assert_eq!(
            parse_codings(Some("gzip, compress")),
            Err(DecodeError::Unsupported)
        );
    }

    #[test]
    fn decodes_gzip_and_both_deflates() {
        let text = b"{\"ssn\":\"123-45-6789\"}".repeat(10);
        assert_eq!(
            decode(&[Coding::Gzip], &gzip(&text), 1 << 20, 100).unwrap(),
            text
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode(&[Coding::Deflate], &z.finish().unwrap(), 1 << 20, 100).unwrap(),
            text
        );
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        d.write_all(&text).unwrap();
        assert_eq!(
            decode(&[Coding::Deflate], &d.finish().unwrap(), 1 << 20, 100).unwrap(),
            text
        );
        assert_eq!(
            decode(&[Coding::Gzip], b"not gzip", 1 << 20, 100),
            Err(DecodeError::Corrupt)
        );
    }

    #[test]
    fn bombs_stop_at_the_caps() {
        let bomb = gzip(&vec![b'a'; 10 << 20]);
        assert!(bomb.len() < 20_000);
        assert_eq!(
            decode(&[Coding::Gzip], &bomb, 64 << 20, 100),
            Err(DecodeError::TooLarge)
        );
        assert_eq!(
            decode(&[Coding::Gzip], &bomb, 1 << 20, 100_000),
            Err(DecodeError::TooLarge)
        );
    }
}
