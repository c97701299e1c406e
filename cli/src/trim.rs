//! Leaves out of a built module the proxy-wasm callbacks its filter does not implement.
//!
//! The proxy-wasm Rust SDK exports every callback of the ABI, so Envoy enters a filter's VM for
//! each one on every request, the access-log call and the body callbacks of a filter that reads
//! only headers included, just to run a default that lets the stream pass. Envoy skips a
//! callback whose export is missing and continues the stream, which is what those defaults do.
//! Which callbacks a filter implements is declared next to them (`Stream::CALLBACKS`, which the
//! fake host honours too); `make build` runs `portcullis trim-module` on every module it copies
//! into `dist/`.

use crate::{CliError, Result};
use portcullis_core::port::{Callbacks, Stream};

/// The callbacks of the filters by name, and of the one module that holds them all.
pub fn callbacks_of(filter: &str) -> Option<Callbacks> {
    Some(match filter {
        "authn" => portcullis_authn::callbacks::AuthnStream::CALLBACKS,
        "ratelimit" => portcullis_ratelimit::callbacks::RateLimitStream::CALLBACKS,
        "schema" => portcullis_schema::callbacks::SchemaStream::CALLBACKS,
        "pii" => portcullis_pii::callbacks::PiiStream::CALLBACKS,
        "all" => portcullis_authn::callbacks::AuthnStream::CALLBACKS
            .union(portcullis_ratelimit::callbacks::RateLimitStream::CALLBACKS)
            .union(portcullis_schema::callbacks::SchemaStream::CALLBACKS)
            .union(portcullis_pii::callbacks::PiiStream::CALLBACKS),
        _ => return None,
    })
}

/// Callbacks from their names (`request_body`, `response_headers`, `response_body`, `done`),
/// for a module that is not one of the filters (the bench's no-op filter).
pub fn callbacks_named(names: &[String]) -> Result<Callbacks> {
    let mut c = Callbacks::HEADERS;
    for n in names {
        match n.as_str() {
            "request_headers" => {}
            "request_body" => c.request_body = true,
            "response_headers" => c.response_headers = true,
            "response_body" => c.response_body = true,
            "done" => c.done = true,
            other => {
                return Err(CliError(format!(
                    "unknown callback `{other}` (request_headers, request_body, \
                     response_headers, response_body, done)"
                )))
            }
        }
    }
    Ok(c)
}

/// `module` without the exports named in `drop`, and the names it dropped. Only the export
/// section changes: the functions stay (nothing else refers to an export), every other
/// section is copied byte for byte. A module that does not parse is refused, never passed on.
pub fn drop_exports(module: &[u8], drop: &[&str]) -> Result<(Vec<u8>, Vec<String>)> {
    let mut out = HEADER.to_vec();
    let mut dropped = Vec::new();
    for section in sections(module)? {
        if section.id == EXPORTS {
            let mut kept = Vec::new();
            let mut n = 0;
            for (name, entry) in exports_of(section.payload)? {
                if drop.contains(&name) {
                    dropped.push(name.to_string());
                } else {
                    kept.extend_from_slice(entry);
                    n += 1;
                }
            }
            out.push(EXPORTS);
            let mut count = Vec::new();
            push_leb(&mut count, n);
            push_leb(&mut out, count.len() + kept.len());
            out.extend_from_slice(&count);
            out.extend_from_slice(&kept);
        } else {
            out.extend_from_slice(section.whole);
        }
    }
    Ok((out, dropped))
}

/// The names a module exports.
pub fn export_names(module: &[u8]) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for section in sections(module)? {
        if section.id == EXPORTS {
            names.extend(
                exports_of(section.payload)?
                    .into_iter()
                    .map(|(n, _)| n.to_string()),
            );
        }
    }
    Ok(names)
}

const HEADER: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];
const EXPORTS: u8 = 7;

/// The module's sections, each checked to lie within it.
fn sections(module: &[u8]) -> Result<Vec<Section<'_>>> {
    if module.get(..8) != Some(&HEADER[..]) {
        return Err(bad("not a WebAssembly 1.0 module"));
    }
    let mut out = Vec::new();
    let mut at = 8;
    while at < module.len() {
        let (size, start) = leb(module, at + 1)?;
        let end = start
            .checked_add(size)
            .filter(|&e| e <= module.len())
            .ok_or_else(|| bad("a section runs past the end"))?;
        out.push(Section {
            id: module[at],
            whole: &module[at..end],
            payload: &module[start..end],
        });
        at = end;
    }
    Ok(out)
}

/// One section of a module, as `sections` checked it.
struct Section<'m> {
    id: u8,
    /// Id, size and payload: what is copied when the section is kept as it is.
    whole: &'m [u8],
    payload: &'m [u8],
}

/// An export section's entries: each name and the entry's bytes (name, kind, index).
fn exports_of(payload: &[u8]) -> Result<Vec<(&str, &[u8])>> {
    let (count, mut at) = leb(payload, 0)?;
    let mut out = Vec::new();
    for _ in 0..count {
        let entry = at;
        let (len, name_at) = leb(payload, at)?;
        let name_end = name_at
            .checked_add(len)
            .filter(|&e| e < payload.len())
            .ok_or_else(|| bad("an export name runs past its section"))?;
        let name = std::str::from_utf8(&payload[name_at..name_end])
            .map_err(|_| bad("an export name is not UTF-8"))?;
        // One byte of kind, then the index.
        let (_, next) = leb(payload, name_end + 1)?;
        out.push((name, &payload[entry..next]));
        at = next;
    }
    if at != payload.len() {
        return Err(bad("the export section has bytes after its entries"));
    }
    Ok(out)
}

/// An unsigned LEB128 value of at most 32 bits at `at`, and where it ends.
fn leb(b: &[u8], mut at: usize) -> Result<(usize, usize)> {
    let mut value: u64 = 0;
    for shift in (0..35).step_by(7) {
        let byte = *b.get(at).ok_or_else(|| bad("truncated"))?;
        at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return usize::try_from(value)
                .ok()
                .filter(|_| value <= u64::from(u32::MAX))
                .map(|v| (v, at))
                .ok_or_else(|| bad("a length over 32 bits"));
        }
    }
    Err(bad("a length over 32 bits"))
}

fn push_leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn bad(what: &str) -> CliError {
    CliError(format!("not a module this can trim: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A module of one export section (names to function indices) between two other sections.
    fn module(exports: &[&str]) -> Vec<u8> {
        let mut sec = Vec::new();
        push_leb(&mut sec, exports.len());
        for (i, e) in exports.iter().enumerate() {
            push_leb(&mut sec, e.len());
            sec.extend_from_slice(e.as_bytes());
            sec.push(0); // a function
            push_leb(&mut sec, i + 200); // two-byte index
        }
        let mut m = vec![0, b'a', b's', b'm', 1, 0, 0, 0];
        m.extend_from_slice(&[1, 3, 0xaa, 0xbb, 0xcc]); // "type" section, opaque here
        m.push(7);
        push_leb(&mut m, sec.len());
        m.extend_from_slice(&sec);
        m.extend_from_slice(&[0, 4, 3, b'x', b'y', b'z']); // a custom section
        m
    }

    #[test]
    fn only_the_named_exports_go_and_every_other_byte_stays() {
        let all = [
            "memory",
            "proxy_on_log",
            "proxy_on_request_headers",
            "proxy_on_done",
        ];
        let (out, dropped) =
            drop_exports(&module(&all), &["proxy_on_log", "proxy_on_done", "absent"]).unwrap();
        assert_eq!(dropped, ["proxy_on_log", "proxy_on_done"]);
        // The same module as if built without them (indices kept: they name the functions).
        let mut want = vec![0, b'a', b's', b'm', 1, 0, 0, 0, 1, 3, 0xaa, 0xbb, 0xcc];
        let mut sec = vec![2];
        for (name, idx) in [("memory", 200), ("proxy_on_request_headers", 202)] {
            push_leb(&mut sec, name.len());
            sec.extend_from_slice(name.as_bytes());
            sec.push(0);
            push_leb(&mut sec, idx);
        }
        want.push(7);
        push_leb(&mut want, sec.len());
        want.extend_from_slice(&sec);
        want.extend_from_slice(&[0, 4, 3, b'x', b'y', b'z']);
        assert_eq!(out, want);
        // Nothing to drop: the module comes back as it was.
        assert_eq!(drop_exports(&module(&all), &[]).unwrap().0, module(&all));
        assert_eq!(
            export_names(&out).unwrap(),
            ["memory", "proxy_on_request_headers"]
        );
    }

    #[test]
    fn a_module_that_does_not_parse_is_refused() {
        let good = module(&["proxy_on_log"]);
        assert!(drop_exports(b"\0asm\x02\0\0\0", &[]).is_err(), "version 2");
        assert!(drop_exports(b"not wasm", &[]).is_err());
        // Cut anywhere but between two sections (a shorter module is still a module).
        let boundaries = [13, good.len() - 6];
        for cut in (9..good.len()).filter(|c| !boundaries.contains(c)) {
            assert!(
                drop_exports(&good[..cut], &["proxy_on_log"]).is_err(),
                "truncated at {cut}"
            );
        }
        let mut long = good.clone();
        long[9] = 0xff; // the first section's size: unterminated LEB128 past the end
        assert!(drop_exports(&long, &[]).is_err());
    }

    #[test]
    fn every_filter_keeps_its_own_callbacks() {
        for f in ["authn", "ratelimit", "schema", "pii", "all"] {
            let c = callbacks_of(f).unwrap();
            let unneeded = c.unneeded_exports();
            assert!(unneeded.contains(&"proxy_on_log"), "{f}");
            assert!(!unneeded.contains(&"proxy_on_request_headers"), "{f}");
            assert_eq!(unneeded.contains(&"proxy_on_request_body"), !c.request_body);
        }
        let all = callbacks_of("all").unwrap();
        for f in ["authn", "ratelimit", "schema", "pii"] {
            assert_eq!(all.union(callbacks_of(f).unwrap()), all, "{f} ⊆ all");
        }
        assert_eq!(callbacks_of("noop"), None);
        assert_eq!(
            callbacks_named(&["response_headers".into()]).unwrap(),
            Callbacks {
                response_headers: true,
                ..Callbacks::HEADERS
            }
        );
        assert!(callbacks_named(&["trailers".into()]).is_err());
    }
}
