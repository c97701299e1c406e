//! Reproducible container images written without a builder or a registry: deterministic layer
//! tars, OCI image layouts and `docker load`-able archives, byte-identical for identical inputs.
//!
//! Two users: `portcullis oci` packs each filter as a Wasm image in the *compat* variant that
//! Istio's Wasm fetcher reads, and `portcullis image` packs a staged root filesystem (the
//! docker-compose harness's images, `make images`).
//!
//! What Istio reads (istio/istio `pkg/wasm/imagefetcher.go`, solo-io/wasm `spec/spec-compat.md`):
//! the *last* layer of the image, media type `application/vnd.oci.image.layer.v1.tar+gzip` (or
//! Docker's `rootfs.diff.tar.gzip` when the manifest is Docker's), gunzipped and walked as a
//! tar for the first entry whose base name is `plugin.wasm`. The spec asks for exactly one
//! layer and the manifest annotation `module.wasm.image/variant: compat`. For an `oci://` URL,
//! the WasmPlugin's `sha256` is compared with the image's **manifest digest**
//! (`pkg/wasm/cache.go`: `dChecksum` comes from `PrepareFetch`, i.e. `img.Digest()`), not with
//! the module's digest — so both digests are reported.
//!
//! Determinism: entries sorted by path, owner 0:0, modification time 0, modes normalised to
//! 0755/0644 (or what the caller gives), gzip without a name or time in its header, and an
//! image config whose `created` is the epoch. The same files therefore always give the same
//! layer digest, config digest, manifest digest and Docker image ID.

use crate::{CliError, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Gzipped layer: what the Wasm compat variant requires.
pub const LAYER_GZIP_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Uncompressed layer: what the harness images use (`docker load` reads both; skipping gzip
/// saves most of the build time of a 100 MB Envoy layer).
pub const LAYER_TAR_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The manifest annotation of the compat variant.
pub const COMPAT_ANNOTATION: (&str, &str) = ("module.wasm.image/variant", "compat");
/// The file name Istio looks for inside the compat layer.
pub const PLUGIN_FILE: &str = "plugin.wasm";

/// `sha256:<hex>` of some bytes.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What one entry of a layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
}

/// One entry of a layer: a relative path (no leading `/`), a mode and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, relative to `/`.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Contents.
    pub kind: EntryKind,
}

impl Entry {
    /// A regular file.
    pub fn file(path: &str, mode: u32, data: Vec<u8>) -> Entry {
        Entry {
            path: path.trim_start_matches('/').to_string(),
            mode,
            kind: EntryKind::File(data),
        }
    }
}

/// Reads a staged directory into entries: regular files, directories and symlinks, with their
/// permission bits reduced to 0755 (anything executable) or 0644 (0777 for links), so the
/// host's umask cannot change a digest. Other file types are refused.
pub fn entries_from_dir(root: &Path) -> Result<Vec<Entry>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd =
            std::fs::read_dir(&dir).map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
        for item in rd {
            let item = item.map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
            let path = item.path();
            let rel = path
                .strip_prefix(root)
                .map_err(|e| CliError(e.to_string()))?
                .to_string_lossy()
                .to_string();
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            let ft = meta.file_type();
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            if ft.is_symlink() {
                let target = std::fs::read_link(&path)
                    .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
                out.push(Entry {
                    path: rel,
                    mode: 0o777,
                    kind: EntryKind::Symlink(target.to_string_lossy().to_string()),
                });
            } else if ft.is_dir() {
                // Sticky world-writable directories (/tmp) keep their mode.
                let mode = if meta.permissions().mode() & 0o1777 == 0o1777 {
                    0o1777
                } else {
                    0o755
                };
                out.push(Entry {
                    path: rel,
                    mode,
                    kind: EntryKind::Dir,
                });
                stack.push(path);
            } else if ft.is_file() {
                let data = std::fs::read(&path)
                    .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
                out.push(Entry {
                    path: rel,
                    mode,
                    kind: EntryKind::File(data),
                });
            } else {
                return Err(CliError(format!(
                    "{}: only files, directories and symlinks can go into an image",
                    path.display()
                )));
            }
        }
    }
    Ok(out)
}

/// A deterministic (uncompressed) tar of the entries: sorted by path, 0:0, mtime 0.
pub fn layer_tar(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    if let Some(w) = sorted.windows(2).find(|w| w[0].path == w[1].path) {
        return Err(CliError(format!("`{}` is in the layer twice", w[0].path)));
    }
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    for e in sorted {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(e.mode);
        let err = |x: std::io::Error| CliError(format!("{}: {x}", e.path));
        match &e.kind {
            EntryKind::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, &e.path, data.as_slice())
                    .map_err(err)?;
            }
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())
                    .map_err(err)?;
            }
            EntryKind::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &e.path, target).map_err(err)?;
            }
        }
    }
    b.into_inner()
        .map_err(|e| CliError(format!("writing a layer: {e}")))
}

/// Gzip with a fixed header (no file name, mtime 0) and a fixed level.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut e = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::new(9));
    e.write_all(data)
        .and_then(|()| e.finish())
        .map_err(|e| CliError(format!("gzip: {e}")))
}

/// The runtime part of an image config (what `docker run` uses).
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`NAME=value`).
    pub env: Vec<String>,
    /// `User` (numeric, e.g. `65532:65532`).
    pub user: Option<String>,
    /// `WorkingDir`.
    pub workdir: Option<String>,
    /// `Labels`.
    pub labels: Vec<(String, String)>,
}

/// A finished image: its blobs and the digests that name it.
#[derive(Debug, Clone)]
pub struct Image {
    /// The manifest (JSON bytes).
    pub manifest: Vec<u8>,
    /// The config (JSON bytes).
    pub config: Vec<u8>,
    /// The layer blobs as stored (compressed or not), in order.
    pub layers: Vec<Vec<u8>>,
    /// `sha256:` of the manifest: what a registry and Istio's `sha256` check see.
    pub manifest_digest: String,
    /// `sha256:` of the config: Docker's image ID.
    pub config_digest: String,
}

impl Image {
    /// Builds an image from uncompressed layer tars.
    pub fn build(
        layer_tars: &[Vec<u8>],
        compress: bool,
        rc: &RuntimeConfig,
        annotations: &[(&str, &str)],
    ) -> Result<Image> {
        let diff_ids: Vec<String> = layer_tars.iter().map(|t| digest(t)).collect();
        let layers: Vec<Vec<u8>> = if compress {
            layer_tars.iter().map(|t| gzip(t)).collect::<Result<_>>()?
        } else {
            layer_tars.to_vec()
        };
        let mut cfg = serde_json::Map::new();
        if !rc.entrypoint.is_empty() {
            cfg.insert("Entrypoint".into(), json!(rc.entrypoint));
        }
        if !rc.cmd.is_empty() {
            cfg.insert("Cmd".into(), json!(rc.cmd));
        }
        if !rc.env.is_empty() {
            cfg.insert("Env".into(), json!(rc.env));
        }
        if let Some(u) = &rc.user {
            cfg.insert("User".into(), json!(u));
        }
        if let Some(w) = &rc.workdir {
            cfg.insert("WorkingDir".into(), json!(w));
        }
        if !rc.labels.is_empty() {
            let labels: serde_json::Map<String, Value> = rc
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            cfg.insert("Labels".into(), Value::Object(labels));
        }
        // serde_json's map is ordered by key, so the bytes are stable.
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": cfg,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .map_err(|e| CliError(e.to_string()))?;
        let layer_media = if compress {
            LAYER_GZIP_MEDIA_TYPE
        } else {
            LAYER_TAR_MEDIA_TYPE
        };
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": digest(&config), "size": config.len() },
            "layers": layers.iter().map(|l| json!({
                "mediaType": layer_media, "digest": digest(l), "size": l.len(),
            })).collect::<Vec<_>>(),
        });
        if !annotations.is_empty() {
            manifest["annotations"] = annotations
                .iter()
                .map(|(k, v)| ((*k).to_string(), json!(v)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        let manifest = serde_json::to_vec(&manifest).map_err(|e| CliError(e.to_string()))?;
        Ok(Image {
            manifest_digest: digest(&manifest),
            config_digest: digest(&config),
            manifest,
            config,
            layers,
        })
    }

    /// The Wasm *compat* image of one module: one gzipped layer holding `plugin.wasm` (0444),
    /// the compat annotation, labels naming the filter and the module's own digest.
    pub fn wasm_compat(wasm: &[u8], filter: &str, version: &str) -> Result<Image> {
        let layer = layer_tar(&[Entry::file(PLUGIN_FILE, 0o444, wasm.to_vec())])?;
        let rc = RuntimeConfig {
            labels: vec![
                (
                    "org.opencontainers.image.title".into(),
                    format!("portcullis-{filter}"),
                ),
                ("org.opencontainers.image.version".into(), version.into()),
                (
                    "dev.portcullis.module.sha256".into(),
                    hex(&Sha256::digest(wasm)),
                ),
            ],
            ..Default::default()
        };
        Image::build(&[layer], true, &rc, &[COMPAT_ANNOTATION])
    }

    /// Every blob with its digest: layers, config, manifest.
    fn blobs(&self) -> Vec<(String, &[u8])> {
        let mut v: Vec<(String, &[u8])> = self
            .layers
            .iter()
            .map(|l| (digest(l), l.as_slice()))
            .collect();
        v.push((self.config_digest.clone(), &self.config));
        v.push((self.manifest_digest.clone(), &self.manifest));
        v
    }

    /// The files of an OCI image layout that is also a `docker save` archive: `oci-layout`,
    /// `index.json` (the tag in `org.opencontainers.image.ref.name`), `blobs/sha256/*`, and
    /// Docker's `manifest.json` pointing at the same blobs. Sorted by path.
    pub fn layout_files(&self, repo_tag: &str) -> Result<Vec<Entry>> {
        let tag = repo_tag.rsplit_once(':').map_or("latest", |(_, t)| t);
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": MANIFEST_MEDIA_TYPE,
                "digest": self.manifest_digest,
                "size": self.manifest.len(),
                "annotations": {
                    "io.containerd.image.name": repo_tag,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        });
        let blob_path = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        let docker = json!([{
            "Config": blob_path(&self.config_digest),
            "RepoTags": [repo_tag],
            "Layers": self.layers.iter().map(|l| blob_path(&digest(l))).collect::<Vec<_>>(),
        }]);
        let to_vec = |v: &Value| serde_json::to_vec(v).map_err(|e| CliError(e.to_string()));
        let mut files = vec![
            Entry::file(
                "oci-layout",
                0o644,
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            Entry::file("index.json", 0o644, to_vec(&index)?),
            Entry::file("manifest.json", 0o644, to_vec(&docker)?),
            Entry {
                path: "blobs".into(),
                mode: 0o755,
                kind: EntryKind::Dir,
            },
            Entry {
                path: "blobs/sha256".into(),
                mode: 0o755,
                kind: EntryKind::Dir,
            },
        ];
        let mut seen = std::collections::BTreeSet::new();
        for (d, bytes) in self.blobs() {
            if seen.insert(d.clone()) {
                files.push(Entry::file(&blob_path(&d), 0o644, bytes.to_vec()));
            }
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(files)
    }

    /// Writes the layout as a directory (created or replaced).
    pub fn write_layout_dir(&self, dir: &Path, repo_tag: &str) -> Result<()> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .map_err(|e| CliError(format!("{}: {e}", dir.display())))?;
        }
        for f in self.layout_files(repo_tag)? {
            let p = dir.join(&f.path);
            let io = |e: std::io::Error| CliError(format!("{}: {e}", p.display()));
            match &f.kind {
                EntryKind::Dir => std::fs::create_dir_all(&p).map_err(io)?,
                EntryKind::File(data) => {
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent).map_err(io)?;
                    }
                    std::fs::write(&p, data).map_err(io)?;
                }
                EntryKind::Symlink(_) => {}
            }
        }
        Ok(())
    }

    /// The layout as one tar: what `docker load -i` reads (Docker ≥ 20.10 reads
    /// `manifest.json`; OCI tools read `index.json`).
    pub fn archive(&self, repo_tag: &str) -> Result<Vec<u8>> {
        layer_tar(&self.layout_files(repo_tag)?)
    }
}

/// Reads `plugin.wasm` back out of a compat image's layer blob (gzipped tar), as Istio does:
/// the first entry whose base name is `plugin.wasm`.
pub fn extract_plugin(layer_gz: &[u8]) -> Result<Vec<u8>> {
    let gz = flate2::read::GzDecoder::new(layer_gz);
    let mut ar = tar::Archive::new(gz);
    let entries = ar
        .entries()
        .map_err(|e| CliError(format!("layer is not a tar.gz: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| CliError(format!("layer: {e}")))?;
        let is_plugin = entry
            .path()
            .ok()
            .and_then(|p| p.file_name().map(|n| n == PLUGIN_FILE))
            .unwrap_or(false);
        if is_plugin {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut out)
                .map_err(|e| CliError(format!("layer: {e}")))?;
            return Ok(out);
        }
    }
    Err(CliError(format!("{PLUGIN_FILE} is not in the layer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &[u8] = b"\0asm\x01\0\0\0fake module";

    #[test]
    fn the_same_inputs_give_the_same_bytes_and_digests() {
        let a = Image::wasm_compat(WASM, "authn", "0.1.0").unwrap();
        let b = Image::wasm_compat(WASM, "authn", "0.1.0").unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.archive("x/y:1").unwrap(), b.archive("x/y:1").unwrap());
        let c = Image::wasm_compat(b"\0asm\x01\0\0\0other", "authn", "0.1.0").unwrap();
        assert_ne!(a.manifest_digest, c.manifest_digest);
    }

    #[test]
    fn a_compat_image_has_one_gzip_layer_with_plugin_wasm_and_the_annotation() {
        let img = Image::wasm_compat(WASM, "authn", "0.1.0").unwrap();
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        assert_eq!(m["layers"][0]["mediaType"], LAYER_GZIP_MEDIA_TYPE);
        assert_eq!(m["annotations"]["module.wasm.image/variant"], "compat");
        assert_eq!(m["config"]["digest"], img.config_digest.as_str());
        assert_eq!(extract_plugin(&img.layers[0]).unwrap(), WASM);
        let cfg: Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(
            cfg["rootfs"]["diff_ids"][0],
            digest(&flate_decode(&img.layers[0]))
        );
    }

    fn flate_decode(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut out).unwrap();
        out
    }

    #[test]
    fn a_staged_directory_gives_the_same_image_whatever_its_times_and_umask() {
        use std::os::unix::fs::PermissionsExt;
        let build = |tag: &str, mode: u32, sleep: bool| {
            let dir =
                std::env::temp_dir().join(format!("portcullis-oci-{}-{tag}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("usr/local/bin")).unwrap();
            if sleep {
                std::thread::sleep(std::time::Duration::from_millis(1100));
            }
            let bin = dir.join("usr/local/bin/app");
            std::fs::write(&bin, b"binary").unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(mode)).unwrap();
            std::fs::write(dir.join("etc-passwd"), b"root:x:0:0::/:/sbin/nologin\n").unwrap();
            std::os::unix::fs::symlink("usr/local/bin/app", dir.join("app")).unwrap();
            let layer = layer_tar(&entries_from_dir(&dir).unwrap()).unwrap();
            let _ = std::fs::remove_dir_all(&dir);
            Image::build(&[layer], false, &RuntimeConfig::default(), &[]).unwrap()
        };
        let a = build("a", 0o755, false);
        let b = build("b", 0o700, true);
        assert_eq!(a.config_digest, b.config_digest);
        assert_eq!(a.archive("t:1").unwrap(), b.archive("t:1").unwrap());
        let c = build("c", 0o644, false);
        assert_ne!(a.config_digest, c.config_digest, "executability is content");
    }

    #[test]
    fn a_layer_refuses_duplicate_paths() {
        let e = Entry::file("a", 0o644, vec![]);
        assert!(layer_tar(&[e.clone(), e]).is_err());
    }

    #[test]
    fn the_layout_names_every_blob_by_its_digest() {
        let img = Image::wasm_compat(WASM, "pii", "0.1.0").unwrap();
        for f in img.layout_files("portcullis/pii:0.1.0").unwrap() {
            if let (Some(hexd), EntryKind::File(data)) =
                (f.path.strip_prefix("blobs/sha256/"), &f.kind)
            {
                assert_eq!(format!("sha256:{hexd}"), digest(data));
            }
        }
    }
}
