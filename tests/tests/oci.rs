//! The filters as Wasm OCI images in Istio's *compat* variant (`make oci`, `cli/src/oci.rs`).
//!
//! Always: each built module packs into an image with one gzipped layer holding `plugin.wasm`
//! and the compat annotation, the same bytes every time.
//!
//! With `PORTCULLIS_DOCKER=1` (`make oci-test`, run by `make compose-test`): the layout and
//! archive `make oci` wrote are byte-identical to a fresh build (reproducible), each archive is
//! loaded into the local Docker engine, `plugin.wasm` is copied out of a container made from
//! it, and its digest must equal `dist/<filter>.wasm`'s. Missing Docker is then a failure.

// Helpers outside #[test] functions fail the test loudly, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use portcullis_cli::oci::{self, Image};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

const FILTERS: [&str; 4] = ["authn", "ratelimit", "schema", "pii"];

fn dist() -> Option<PathBuf> {
    let d = std::env::var("PORTCULLIS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dist"));
    if FILTERS.iter().all(|f| d.join(format!("{f}.wasm")).exists()) {
        return Some(d);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true")
            && std::env::var("PORTCULLIS_DOCKER").as_deref() != Ok("1"),
        "dist/*.wasm missing: run make build"
    );
    eprintln!("SKIPPED: dist/*.wasm not built");
    None
}

fn tag(f: &str) -> String {
    format!("portcullis-{f}:{}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn each_module_packs_into_a_reproducible_compat_image() {
    let Some(dist) = dist() else { return };
    for f in FILTERS {
        let wasm = std::fs::read(dist.join(format!("{f}.wasm"))).unwrap();
        let img = Image::wasm_compat(&wasm, f, env!("CARGO_PKG_VERSION")).unwrap();
        let m: Value = serde_json::from_slice(&img.manifest).unwrap();
        assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{f}: one layer");
        assert_eq!(m["layers"][0]["mediaType"], oci::LAYER_GZIP_MEDIA_TYPE);
        assert_eq!(m["annotations"]["module.wasm.image/variant"], "compat");
        assert_eq!(oci::extract_plugin(&img.layers[0]).unwrap(), wasm, "{f}");
        let cfg: Value = serde_json::from_slice(&img.config).unwrap();
        assert_eq!(
            cfg["config"]["Labels"]["dev.portcullis.module.sha256"],
            oci::digest(&wasm).trim_start_matches("sha256:")
        );
        let again = Image::wasm_compat(&wasm, f, env!("CARGO_PKG_VERSION")).unwrap();
        assert_eq!(
            img.archive(&tag(f)).unwrap(),
            again.archive(&tag(f)).unwrap()
        );
    }
}

fn docker(args: &[&str]) -> (bool, Vec<u8>, String) {
    let o = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker: {e}"));
    (
        o.status.success(),
        o.stdout,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn docker_loads_each_image_and_plugin_wasm_comes_back_intact() {
    if std::env::var("PORTCULLIS_DOCKER").as_deref() != Ok("1") {
        eprintln!("SKIPPED: PORTCULLIS_DOCKER is not set (make oci-test)");
        return;
    }
    let Some(dist) = dist() else { return };
    assert!(
        docker(&["info"]).0,
        "PORTCULLIS_DOCKER=1 but no Docker daemon answers"
    );
    for f in FILTERS {
        let archive = dist.join("oci").join(format!("{f}.tar"));
        assert!(
            archive.exists(),
            "{} missing: run make oci",
            archive.display()
        );
        let (ok, out, err) = docker(&["load", "-i", &archive.to_string_lossy()]);
        assert!(ok, "docker load {f}: {err}");
        assert!(
            String::from_utf8_lossy(&out).contains(&tag(f)),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let wasm = std::fs::read(dist.join(format!("{f}.wasm"))).unwrap();
        let img = Image::wasm_compat(&wasm, f, env!("CARGO_PKG_VERSION")).unwrap();
        // What `make oci` wrote is this very image: reproducible byte for byte.
        assert!(
            std::fs::read(&archive).unwrap() == img.archive(&tag(f)).unwrap(),
            "dist/oci/{f}.tar differs from a fresh build of dist/{f}.wasm"
        );
        let out = dist.join("oci").join(f);
        let index: Value =
            serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            img.manifest_digest.as_str()
        );
        let blob = out
            .join("blobs/sha256")
            .join(img.manifest_digest.trim_start_matches("sha256:"));
        assert_eq!(std::fs::read(blob).unwrap(), img.manifest);
        let (_, id, _) = docker(&["image", "inspect", "--format", "{{.Id}}", &tag(f)]);
        assert_eq!(
            String::from_utf8_lossy(&id).trim(),
            img.config_digest,
            "image ID"
        );
        // A container is never started (the image has no program); it only holds the files.
        let name = format!("portcullis-oci-test-{f}-{}", std::process::id());
        let (ok, _, err) = docker(&["create", "--name", &name, &tag(f), "/plugin.wasm"]);
        assert!(ok, "docker create {f}: {err}");
        let (ok, tar, err) = docker(&["cp", &format!("{name}:/plugin.wasm"), "-"]);
        docker(&["rm", "-f", &name]);
        docker(&["rmi", &tag(f)]);
        assert!(ok, "docker cp {f}: {err}");
        let mut ar = tar::Archive::new(tar.as_slice());
        let mut entry = ar.entries().unwrap().next().unwrap().unwrap();
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut back).unwrap();
        assert_eq!(
            oci::digest(&back),
            oci::digest(&wasm),
            "{f}: plugin.wasm from the engine differs from dist/{f}.wasm"
        );
        eprintln!(
            "{f}: loaded {} ({}), plugin.wasm {}",
            tag(f),
            img.manifest_digest,
            oci::digest(&back)
        );
    }
}
