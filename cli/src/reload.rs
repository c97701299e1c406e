//! Hot policy reload: the wasm filters of a rendered config served to Envoy through extension
//! config discovery (ECDS) from files, one per filter, replaced atomically by `portcullis
//! apply` and `portcullis emergency`.
//!
//! Envoy watches each `path_config_source` file and loads it again when a file is moved onto
//! its path. The new `Wasm` filter config keeps the VM's id, code and settings, so Envoy keeps
//! the running VMs and only starts a new root context with the new plugin configuration;
//! everything the filters share through Envoy's shared data (buckets, quotas, fetched JWKS,
//! DPoP replay records, the hash secret) belongs to the process and is untouched. A config the
//! filter refuses (its `on_configure` says no) is rejected by Envoy, and the previous one keeps
//! serving — but `apply` compiles every policy with the filters' own code first, so such a
//! file is never written.

use crate::{CliError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The reload directory's record of how it was rendered and what is in force.
pub const MANIFEST_FILE: &str = "portcullis-reload.json";

/// The `@type` of the wasm HTTP filter's configuration.
pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// What `render --reload-dir` records so that `apply` and `emergency` need no other input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `render` arguments as given (without `--out`), parsed again by `apply`.
    pub render_args: Vec<String>,
    /// The directory `render` ran in: relative paths in `render_args` are relative to it.
    pub cwd: PathBuf,
    /// The policy directory in force (absolute).
    pub policies: PathBuf,
    /// Emergency mode is on.
    pub emergency: bool,
    /// The bootstrap config Envoy was started with. A policy change that would alter it
    /// (listener buffers, edge settings) needs a restart, and `apply` refuses it.
    pub bootstrap: String,
}

impl Manifest {
    /// Reads `DIR/portcullis-reload.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CliError(format!(
                "{}: {e} (render with `portcullis render --reload-dir {}` first)",
                path.display(),
                dir.display()
            ))
        })?;
        serde_json::from_str(&text).map_err(|e| CliError(format!("{}: {e}", path.display())))
    }

    /// Writes it atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| CliError(format!("manifest: {e}")))?;
        write_atomic(&dir.join(MANIFEST_FILE), text.as_bytes())
    }
}

/// One filter configuration served through ECDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFile {
    /// The HTTP filter's name (also the ECDS resource name), e.g. `portcullis.authn`.
    pub name: String,
    /// The discovery response Envoy reads.
    pub content: String,
}

impl FilterFile {
    /// The file's name inside the reload directory.
    pub fn file_name(&self) -> String {
        format!("{}.yaml", self.name)
    }
}

/// The ECDS file of a filter: a discovery response holding one `TypedExtensionConfig` with
/// the filter's `Wasm` config, versioned by its digest.
fn discovery_response(name: &str, typed_config: &Value) -> Result<String> {
    let resource = json!({
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": name,
        "typed_config": typed_config,
    });
    let digest = sha2::Sha256::digest(resource.to_string().as_bytes());
    let version: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    let doc = json!({ "version_info": version, "resources": [resource] });
    let yaml =
        serde_norway::to_string(&doc).map_err(|e| CliError(format!("ECDS file {name}: {e}")))?;
    Ok(format!(
        "# {name}: written by `portcullis render/apply/emergency`; Envoy reloads it when it is replaced.\n{yaml}"
    ))
}

/// Splits a rendered (inline) config: every wasm HTTP filter becomes a `config_discovery`
/// reference to `DIR/<name>.yaml`, whose content is returned beside the new bootstrap.
pub fn split(rendered: &str, dir: &Path) -> Result<(String, Vec<FilterFile>)> {
    let mut doc: Value = serde_norway::from_str(rendered)
        .map_err(|e| CliError(format!("rendered config is not valid YAML: {e}")))?;
    let mut files: Vec<FilterFile> = Vec::new();
    let listeners = doc
        .get_mut("static_resources")
        .and_then(|r| r.get_mut("listeners"))
        .and_then(Value::as_array_mut);
    for l in listeners.into_iter().flatten() {
        let chains = l.get_mut("filter_chains").and_then(Value::as_array_mut);
        for chain in chains.into_iter().flatten() {
            let filters = chain.get_mut("filters").and_then(Value::as_array_mut);
            for f in filters.into_iter().flatten() {
                let http = f
                    .get_mut("typed_config")
                    .and_then(|t| t.get_mut("http_filters"))
                    .and_then(Value::as_array_mut);
                for hf in http.into_iter().flatten() {
                    let is_wasm = hf["typed_config"]["@type"].as_str() == Some(WASM_TYPE);
                    if !is_wasm {
                        continue;
                    }
                    let name = hf["name"].as_str().unwrap_or_default().to_string();
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/') {
                        return Err(CliError(format!(
                            "a wasm filter named `{name}` cannot name a file"
                        )));
                    }
                    if files.iter().any(|x| x.name == name) {
                        return Err(CliError(format!(
                            "two wasm filters are named `{name}`: ECDS names must be unique"
                        )));
                    }
                    let content = discovery_response(&name, &hf["typed_config"])?;
                    let path = dir.join(format!("{name}.yaml"));
                    *hf = json!({
                        "name": name,
                        "config_discovery": {
                            "config_source": {
                                "path_config_source": { "path": path.to_string_lossy() },
                                "resource_api_version": "V3",
                            },
                            "type_urls": [WASM_TYPE],
                        },
                    });
                    files.push(FilterFile { name, content });
                }
            }
        }
    }
    if files.is_empty() {
        return Err(CliError(
            "--reload-dir: the rendered config has no wasm filter to serve".into(),
        ));
    }
    // A file-based discovery source needs the node's id and cluster (Envoy refuses the
    // config without them); a template that names its node keeps it.
    if let Some(obj) = doc.as_object_mut() {
        obj.entry("node")
            .or_insert_with(|| json!({"id": "portcullis-gateway", "cluster": "portcullis"}));
    }
    let yaml =
        serde_norway::to_string(&doc).map_err(|e| CliError(format!("rendered config: {e}")))?;
    Ok((
        format!(
            "# Portcullis gateway, rendered by `portcullis render --reload-dir {}`: the filters'\n\
             # configurations are in that directory (extension config discovery from files);\n\
             # `portcullis apply` and `portcullis emergency` replace them without a restart.\n{yaml}",
            dir.display()
        ),
        files,
    ))
}

/// Writes a file so that a reader sees the old content or the new one, never a mix: a
/// temporary file in the same directory, flushed to disk, then renamed over the target (the
/// rename is also what Envoy's file watch reacts to).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let at = |e: std::io::Error| CliError(format!("{}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut f = std::fs::File::create(&tmp).map_err(at)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(at(e));
    }
    // The rename itself survives a crash only once the directory is on disk.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What happened to one filter file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Same content as before: not written (Envoy sees nothing).
    Unchanged,
    /// Replaced.
    Updated,
    /// Written for the first time.
    Created,
}

/// Writes the filter files whose content changed, each atomically; returns what changed.
pub fn publish(dir: &Path, files: &[FilterFile]) -> Result<Vec<(String, Change)>> {
    let mut out = Vec::new();
    for f in files {
        let path = dir.join(f.file_name());
        let change = match std::fs::read_to_string(&path) {
            Ok(old) if old == f.content => Change::Unchanged,
            Ok(_) => Change::Updated,
            Err(_) => Change::Created,
        };
        if change != Change::Unchanged {
            write_atomic(&path, f.content.as_bytes())?;
        }
        out.push((f.name.clone(), change));
    }
    Ok(out)
}

/// The first line where two configs differ (1-based), with both lines, for the message that
/// explains why a change needs a restart.
pub fn first_difference(old: &str, new: &str) -> String {
    let (mut a, mut b) = (old.lines(), new.lines());
    let mut n = 1;
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => n += 1,
            (x, y) => {
                return format!(
                    "line {n}: `{}` becomes `{}`",
                    x.unwrap_or("").trim(),
                    y.unwrap_or("").trim()
                )
            }
        }
    }
}

/// The admin endpoint's ECDS counters of one filter: (`update_success`, `update_rejected`).
/// (`config_reload` moves on a refused update too, so it cannot tell the two apart.)
pub type Counters = (u64, u64);

/// Reads `/stats` from Envoy's admin endpoint (plain HTTP/1.1 over loopback).
pub fn admin_stats(admin: &str) -> Result<String> {
    let mut s =
        std::net::TcpStream::connect(admin).map_err(|e| CliError(format!("admin {admin}: {e}")))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "GET /stats?filter=extension_config_discovery HTTP/1.1\r\nhost: {admin}\r\nconnection: close\r\n\r\n"
    )
    .map_err(|e| CliError(format!("admin {admin}: {e}")))?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .map_err(|e| CliError(format!("admin {admin}: {e}")))?;
    Ok(out)
}

/// The ECDS counters of filter `name` in an admin `/stats` text (absent: zero).
pub fn counters(stats: &str, name: &str) -> Counters {
    let read = |suffix: &str| {
        stats
            .lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| {
                k.starts_with("extension_config_discovery.")
                    && k.ends_with(&format!(".{name}.{suffix}"))
            })
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("update_success"), read("update_rejected"))
}

/// Waits until Envoy has taken (or refused) each changed filter's new file: its
/// `update_success` or `update_rejected` counter moves past the value read before the write.
/// Returns the filters Envoy refused; an error when it says nothing within `timeout`.
pub fn confirm(
    admin: &str,
    before: &[(String, Counters)],
    timeout: Duration,
) -> Result<Vec<String>> {
    let start = Instant::now();
    loop {
        let stats = admin_stats(admin)?;
        let mut pending = Vec::new();
        let mut refused = Vec::new();
        for (name, (reload, fail)) in before {
            let (r, f) = counters(&stats, name);
            if f > *fail {
                refused.push(name.clone());
            } else if r <= *reload {
                pending.push(name.clone());
            }
        }
        if pending.is_empty() {
            return Ok(refused);
        }
        if start.elapsed() > timeout {
            return Err(CliError(format!(
                "Envoy at {admin} has not loaded {} within {} s (is it running with this reload directory?)",
                pending.join(", "),
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The reload directory as given, made absolute (Envoy and later commands may run elsewhere).
pub fn absolute(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
    std::fs::canonicalize(dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wasm_filter_becomes_a_discovery_reference_and_a_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = crate::policy::load(&root.join("policies")).unwrap();
        let tmpl = std::fs::read_to_string(root.join("envoy/gateway.yaml.tmpl")).unwrap();
        let out = crate::render::render(&tmpl, &p, &Default::default()).unwrap();
        let (boot, files) = split(&out, Path::new("/srv/xds")).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "portcullis.ratelimit_ip",
                "portcullis.authn",
                "portcullis.ratelimit",
                "portcullis.pii",
                "portcullis.schema"
            ]
        );
        let y: Value = serde_norway::from_str(&boot).unwrap();
        let hf = &y["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
            ["typed_config"]["http_filters"];
        assert_eq!(
            hf[2]["config_discovery"]["config_source"]["path_config_source"]["path"],
            "/srv/xds/portcullis.authn.yaml"
        );
        assert!(hf[2].get("typed_config").is_none());
        assert!(!boot.contains("vm_config"), "no filter config stays inline");
        // Each file holds the same Wasm config that was inline, with its own version.
        let f: Value = serde_norway::from_str(&files[1].content).unwrap();
        let r = &f["resources"][0];
        assert_eq!(r["name"], "portcullis.authn");
        assert_eq!(r["typed_config"]["@type"], WASM_TYPE);
        assert_eq!(
            r["typed_config"]["config"]["vm_config"]["vm_id"],
            "portcullis.authn"
        );
        assert_eq!(f["version_info"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn publishing_writes_only_what_changed_and_atomically() {
        let dir = std::env::temp_dir().join(format!("portcullis-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let f = |c: &str| FilterFile {
            name: "portcullis.x".into(),
            content: c.into(),
        };
        assert_eq!(publish(&dir, &[f("a")]).unwrap()[0].1, Change::Created);
        assert_eq!(publish(&dir, &[f("a")]).unwrap()[0].1, Change::Unchanged);
        assert_eq!(publish(&dir, &[f("b")]).unwrap()[0].1, Change::Updated);
        assert_eq!(
            std::fs::read_to_string(dir.join("portcullis.x.yaml")).unwrap(),
            "b"
        );
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ecds_counters_are_read_from_admin_stats() {
        let stats = "extension_config_discovery.http_filter.portcullis.authn.update_success: 3\n\
                     extension_config_discovery.http_filter.portcullis.authn.update_rejected: 1\n\
                     extension_config_discovery.http_filter.portcullis.authn.version_text: \"ab\"\n\
                     extension_config_discovery.http_filter.portcullis.ratelimit_ip.update_success: 9\n";
        assert_eq!(counters(stats, "portcullis.authn"), (3, 1));
        assert_eq!(counters(stats, "portcullis.ratelimit"), (0, 0));
        assert!(first_difference("a\nb\nc", "a\nx\nc").starts_with("line 2"));
    }
}
