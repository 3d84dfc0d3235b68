//! `cargo xtask oci`: the filter module as an OCI artifact in an OCI image layout directory,
//! in the *oci* variant of the Wasm image specification that Istio's WasmPlugin fetcher reads
//! (github.com/solo-io/wasm `spec/spec.md`; Istio `pkg/wasm/imagefetcher.go`): an image
//! manifest whose two layers are the runtime config (`application/vnd.module.wasm.config.v1+json`,
//! `runtime-config.json`) and the module itself (`application/vnd.module.wasm.content.layer.v1+wasm`,
//! `plugin.wasm`, uncompressed). No container daemon: the layout is files and JSON, pushed
//! with any OCI tool (`skopeo copy oci:DIR:TAG docker://…`, `oras cp --from-oci-layout`).
//!
//! Istio compares WasmPlugin's `sha256` with the **manifest** digest of a pulled image, so
//! that is the digest printed for it; the layer digest is the module's own SHA-256 (what
//! `sha256` means for `file://` and `https://` URLs).

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of the Wasm runtime config (config and first layer).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.module.wasm.config.v1+json";
/// Media type of the Wasm module layer.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// The proxy-wasm ABI the module exports (`proxy_abi_version_0_2_1`).
pub const ABI_VERSION: &str = "proxy_abi_version_0_2_1";

/// The digests of a written layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The layout directory.
    pub dir: PathBuf,
    /// `sha256:<hex>` of the image manifest: what WasmPlugin's `sha256` (hex part) and
    /// `oci://…@sha256:` name.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the module: the Wasm layer's digest.
    pub module_digest: String,
    /// The tag recorded in `index.json` (`org.opencontainers.image.ref.name`).
    pub tag: String,
}

/// Lowercase hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An OCI content descriptor of `bytes`, with an optional title annotation.
pub(crate) fn descriptor(media_type: &str, bytes: &[u8], title: Option<&str>) -> Value {
    let mut d = json!({
        "mediaType": media_type,
        "digest": format!("sha256:{}", sha256_hex(bytes)),
        "size": bytes.len(),
    });
    if let Some(t) = title {
        d["annotations"] = json!({ "org.opencontainers.image.title": t });
    }
    d
}

/// Store `bytes` under `blobs/sha256/<hex>` of the layout at `dir`.
pub(crate) fn put_blob(dir: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).with_context(|| format!("create {}", blobs.display()))?;
    let path = blobs.join(sha256_hex(bytes));
    std::fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))
}

/// Write `module` as the OCI artifact `tag` into the layout at `dir` (replaced if present).
pub fn write_layout(module: &[u8], dir: &Path, tag: &str) -> anyhow::Result<Written> {
    ensure!(
        module.starts_with(b"\0asm"),
        "not a Wasm module (no \\0asm magic)"
    );
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let runtime = serde_json::to_vec(&json!({
        "type": "envoy_proxy",
        "abi_version": ABI_VERSION,
        // The filter serves any root id: it registers one root context factory.
        "config": {"root_ids": []},
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": descriptor(WASM_CONFIG_MEDIA_TYPE, &runtime, None),
        "layers": [
            descriptor(WASM_CONFIG_MEDIA_TYPE, &runtime, Some("runtime-config.json")),
            descriptor(WASM_LAYER_MEDIA_TYPE, module, Some("plugin.wasm")),
        ],
        "annotations": {
            "org.opencontainers.image.title": "knhk_filter",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.description": "knhk canary routing and admission filter (proxy-wasm)",
        },
    }))?;
    put_blob(dir, &runtime)?;
    put_blob(dir, module)?;
    write_index(dir, &manifest, tag)?;
    let written = Written {
        dir: dir.to_path_buf(),
        manifest_digest: format!("sha256:{}", sha256_hex(&manifest)),
        module_digest: format!("sha256:{}", sha256_hex(module)),
        tag: tag.to_owned(),
    };
    let checked = check_layout(dir)?;
    ensure!(
        checked == written,
        "the layout does not read back as written"
    );
    Ok(written)
}

/// Store `manifest` and write `index.json` (one manifest, tagged `tag`) and `oci-layout`.
pub(crate) fn write_index(dir: &Path, manifest: &[u8], tag: &str) -> anyhow::Result<()> {
    put_blob(dir, manifest)?;
    let mut manifest_descriptor = descriptor(MANIFEST_MEDIA_TYPE, manifest, None);
    manifest_descriptor["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [manifest_descriptor],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
    std::fs::write(
        dir.join("oci-layout"),
        serde_json::to_vec(&json!({"imageLayoutVersion": "1.0.0"}))?,
    )?;
    Ok(())
}

/// The parsed JSON file at `path`.
pub(crate) fn read_json(path: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not JSON", path.display()))
}

/// The blob a descriptor names, checked: its file exists, its size and its SHA-256 match.
pub(crate) fn blob(dir: &Path, d: &Value) -> anyhow::Result<Vec<u8>> {
    let digest = d["digest"].as_str().context("descriptor without digest")?;
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("digest {digest:?} is not sha256:<64 hex>"))?;
    let bytes = std::fs::read(dir.join("blobs").join("sha256").join(hex))
        .with_context(|| format!("blob {digest} is missing"))?;
    ensure!(
        sha256_hex(&bytes) == hex,
        "blob {digest} does not hash to its name"
    );
    ensure!(
        d["size"].as_u64() == Some(bytes.len() as u64),
        "blob {digest}: size {} declared, {} found",
        d["size"],
        bytes.len()
    );
    Ok(bytes)
}

/// Read a layout's `oci-layout` and `index.json` (exactly one tagged image manifest) and that
/// manifest, checking versions, media types and the manifest blob's digest and size: the tag,
/// the manifest's descriptor and the manifest.
pub(crate) fn read_index(dir: &Path) -> anyhow::Result<(String, Value, Value)> {
    let layout = read_json(&dir.join("oci-layout"))?;
    ensure!(
        layout["imageLayoutVersion"] == "1.0.0",
        "oci-layout: imageLayoutVersion {} (want 1.0.0)",
        layout["imageLayoutVersion"]
    );
    let index = read_json(&dir.join("index.json"))?;
    ensure!(
        index["schemaVersion"] == 2,
        "index.json: schemaVersion {}",
        index["schemaVersion"]
    );
    ensure!(
        index["mediaType"] == INDEX_MEDIA_TYPE,
        "index.json: mediaType {}",
        index["mediaType"]
    );
    let manifests = index["manifests"]
        .as_array()
        .context("index.json: no manifests")?;
    ensure!(
        manifests.len() == 1,
        "index.json: {} manifests (want 1)",
        manifests.len()
    );
    let md = &manifests[0];
    ensure!(
        md["mediaType"] == MANIFEST_MEDIA_TYPE,
        "index.json: manifest mediaType {}",
        md["mediaType"]
    );
    let tag = md["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .context("index.json: the manifest has no ref.name tag")?
        .to_owned();
    let manifest_bytes = blob(dir, md)?;
    let manifest: Value =
        serde_json::from_slice(&manifest_bytes).context("manifest is not JSON")?;
    ensure!(
        manifest["schemaVersion"] == 2,
        "manifest: schemaVersion {}",
        manifest["schemaVersion"]
    );
    ensure!(
        manifest["mediaType"] == MANIFEST_MEDIA_TYPE,
        "manifest: mediaType {}",
        manifest["mediaType"]
    );
    Ok((tag, md.clone(), manifest))
}

/// The manifest's layers, which must be exactly `want` (`why` says whose rule that is).
pub(crate) fn layers_of<'m>(
    manifest: &'m Value,
    want: usize,
    why: &str,
) -> anyhow::Result<&'m [Value]> {
    let layers = manifest["layers"]
        .as_array()
        .context("manifest: no layers")?;
    ensure!(
        layers.len() == want,
        "manifest: {} layers ({why})",
        layers.len()
    );
    Ok(layers)
}

/// Check a layout against the OCI image layout and Wasm image specifications: `oci-layout`
/// version, one tagged manifest in `index.json`, media types, every blob's digest and size,
/// exactly the runtime-config and module layers, the module's magic; the digests on success.
pub fn check_layout(dir: &Path) -> anyhow::Result<Written> {
    let (tag, md, manifest) = read_index(dir)?;
    ensure!(
        manifest["config"]["mediaType"] == WASM_CONFIG_MEDIA_TYPE,
        "manifest: config mediaType {}",
        manifest["config"]["mediaType"]
    );
    let runtime: Value = serde_json::from_slice(&blob(dir, &manifest["config"])?)
        .context("runtime config is not JSON")?;
    ensure!(
        runtime["type"] == "envoy_proxy",
        "runtime config: type {}",
        runtime["type"]
    );
    // Istio's fetcher takes an *oci* variant image only with exactly two layers.
    let layers = layers_of(&manifest, 2, "the oci variant has 2")?;
    ensure!(
        layers[0]["mediaType"] == WASM_CONFIG_MEDIA_TYPE,
        "layer 0: mediaType {}",
        layers[0]["mediaType"]
    );
    blob(dir, &layers[0])?;
    ensure!(
        layers[1]["mediaType"] == WASM_LAYER_MEDIA_TYPE,
        "layer 1: mediaType {}",
        layers[1]["mediaType"]
    );
    let module = blob(dir, &layers[1])?;
    if !module.starts_with(b"\0asm") {
        bail!("layer 1 is not a Wasm module");
    }
    Ok(Written {
        dir: dir.to_path_buf(),
        manifest_digest: md["digest"].as_str().unwrap_or_default().to_owned(),
        module_digest: format!("sha256:{}", sha256_hex(&module)),
        tag,
    })
}

/// `cargo xtask oci`.
#[derive(Debug, clap::Args)]
pub struct OciArgs {
    /// Layout directory (replaced).
    #[arg(long, default_value = "target/oci/knhk-filter")]
    pub out: PathBuf,
    /// Tag recorded in the layout.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// Package this module instead of building `knhk_filter.wasm`.
    #[arg(long)]
    pub wasm: Option<PathBuf>,
}

/// Build the module (unless given), write the layout, print what WasmPlugin needs.
pub fn run(args: &OciArgs) -> anyhow::Result<()> {
    let wasm = match &args.wasm {
        Some(p) => p.clone(),
        None => crate::wasm::build("knhk-filter", "knhk_filter")?,
    };
    let module = std::fs::read(&wasm).with_context(|| format!("read {}", wasm.display()))?;
    // Relative to the repository; an absolute path replaces the root when joined.
    let w = write_layout(
        &module,
        &crate::util::repo_root().join(&args.out),
        &args.tag,
    )?;
    println!(
        "oci: {} ({} bytes module, tag {})",
        w.dir.display(),
        module.len(),
        w.tag
    );
    println!("oci: manifest digest {}  <- WasmPlugin sha256 (hex part), or url: oci://REGISTRY/knhk-filter@{}", w.manifest_digest, w.manifest_digest);
    println!(
        "oci: module digest   {}  (the Wasm layer; sha256 of knhk_filter.wasm)",
        w.module_digest
    );
    println!(
        "oci: push with e.g. `skopeo copy oci:{}:{} docker://REGISTRY/knhk-filter:{}`",
        w.dir.display(),
        w.tag,
        w.tag
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module() -> Vec<u8> {
        // The real module when the test run has one (`cargo xtask test` sets KNHK_WASM), else
        // the smallest valid Wasm module.
        std::env::var_os("KNHK_WASM")
            .filter(|v| !v.is_empty())
            .and_then(|p| std::fs::read(p).ok())
            .unwrap_or_else(|| b"\0asm\x01\0\0\0".to_vec())
    }

    /// The written layout reads back against the specs: media types, the layer digest is the
    /// module's SHA-256, the manifest digest names the manifest blob.
    #[test]
    fn layout_follows_the_specs() {
        let dir = tempfile::tempdir().unwrap();
        let module = module();
        let w = write_layout(&module, &dir.path().join("layout"), "1.2.3").unwrap();
        assert_eq!(w.module_digest, format!("sha256:{}", sha256_hex(&module)));
        let index = read_json(&w.dir.join("index.json")).unwrap();
        assert_eq!(index["manifests"][0]["digest"], w.manifest_digest.as_str());
        let hex = w.manifest_digest.strip_prefix("sha256:").unwrap();
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(w.dir.join("blobs/sha256").join(hex)).unwrap())
                .unwrap();
        assert_eq!(manifest["layers"][1]["digest"], w.module_digest.as_str());
        assert_eq!(
            manifest["layers"][1]["annotations"]["org.opencontainers.image.title"],
            "plugin.wasm"
        );
        assert_eq!(w.tag, "1.2.3");
    }

    /// A layout whose module blob was changed, whose layer media type is wrong, or that lacks
    /// `oci-layout`, fails the check with the reason.
    #[test]
    fn tampered_layouts_fail_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let w = write_layout(&module(), &dir.path().join("l"), "t").unwrap();
        let blob = w
            .dir
            .join("blobs/sha256")
            .join(w.module_digest.strip_prefix("sha256:").unwrap());
        let mut bytes = std::fs::read(&blob).unwrap();
        bytes.push(0);
        std::fs::write(&blob, &bytes).unwrap();
        let e = check_layout(&w.dir).unwrap_err().to_string();
        assert!(e.contains("does not hash to its name"), "{e}");

        let w = write_layout(&module(), &dir.path().join("m"), "t").unwrap();
        std::fs::remove_file(w.dir.join("oci-layout")).unwrap();
        assert!(check_layout(&w.dir)
            .unwrap_err()
            .to_string()
            .contains("oci-layout"));
        assert!(write_layout(b"not wasm", &dir.path().join("n"), "t").is_err());
    }
}
