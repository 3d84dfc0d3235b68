//! `cargo xtask oci-agent`: the agent as a container image in an OCI image layout directory,
//! built without a container daemon. One uncompressed layer holds `knhk-agent` at
//! `/usr/local/bin/knhk-agent`, the shared libraries and loader `ldd` resolves for it (the
//! binary links glibc dynamically), and `/etc/passwd` / `/etc/group` naming the non-root user
//! 65532 the StatefulSet runs it as; the image config sets that user, the entrypoint, the
//! API port and `run --config=/etc/knhk/agent.toml` as the default command. Push it with any
//! OCI tool (`skopeo copy oci:DIR:TAG docker://…`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use crate::oci::{blob, descriptor, layers_of, put_blob, read_index, sha256_hex, write_index};

/// Media type of an OCI image config.
pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of an uncompressed OCI layer.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// Where the binary lives in the image.
pub const BINARY_PATH: &str = "usr/local/bin/knhk-agent";
/// The user and group the image runs as (the StatefulSet's `runAsUser`/`fsGroup`).
pub const USER: u32 = 65532;

/// What a written image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    /// The layout directory.
    pub dir: PathBuf,
    /// `sha256:<hex>` of the image manifest (what `image: …@sha256:` pins).
    pub manifest_digest: String,
    /// The files of the layer, as paths inside the image.
    pub files: Vec<String>,
    /// The tag in `index.json`.
    pub tag: String,
}

/// The shared objects the dynamic loader resolves for `binary` (absolute paths, the loader
/// included), as `ldd` prints them; none for a static binary.
pub fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd (Debian package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable": nothing to bundle.
        if String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
            || text.contains("statically linked")
        {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("ldd {}: {line}", binary.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)";
        // the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// A deterministic tar of `files` (path inside the image → bytes and mode), with the parent
/// directories each path needs; owner root, mtime 0.
fn layer_tar(files: &[(String, Vec<u8>, u32)]) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for (path, _, _) in files {
        let mut at = String::new();
        for part in path.split('/').take(path.split('/').count() - 1) {
            at.push_str(part);
            at.push('/');
            if !dirs.contains(&at) {
                dirs.push(at.clone());
            }
        }
    }
    dirs.sort();
    for dir in &dirs {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, dir, std::io::empty())?;
    }
    for (path, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(*mode);
        header.set_size(bytes.len() as u64);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        builder.append_data(&mut header, path, bytes.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

/// Write the image of `binary` as `tag` into the layout at `dir` (replaced if present).
pub fn write_image(binary: &Path, dir: &Path, tag: &str) -> anyhow::Result<WrittenImage> {
    let mut files: Vec<(String, Vec<u8>, u32)> = vec![(
        BINARY_PATH.to_owned(),
        std::fs::read(binary).with_context(|| format!("read {}", binary.display()))?,
        0o755,
    )];
    for lib in shared_libraries(binary)? {
        let bytes = std::fs::read(&lib).with_context(|| format!("read {}", lib.display()))?;
        let inside = lib.to_string_lossy().trim_start_matches('/').to_owned();
        files.push((inside, bytes, 0o755));
    }
    files.push((
        "etc/passwd".into(),
        format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{USER}:{USER}:nonroot:/home/nonroot:/sbin/nologin\n").into_bytes(),
        0o644,
    ));
    files.push((
        "etc/group".into(),
        format!("root:x:0:\nnonroot:x:{USER}:\n").into_bytes(),
        0o644,
    ));
    let layer = layer_tar(&files)?;
    let layer_digest = format!("sha256:{}", sha256_hex(&layer));
    let config = serde_json::to_vec(&json!({
        "architecture": oci_architecture()?,
        "os": "linux",
        "config": {
            "User": format!("{USER}:{USER}"),
            "Entrypoint": [format!("/{BINARY_PATH}")],
            "Cmd": ["run", "--config=/etc/knhk/agent.toml", "--listen=0.0.0.0:9901"],
            "ExposedPorts": {"9901/tcp": {}},
            "Env": ["PATH=/usr/local/bin"],
            "WorkingDir": "/",
        },
        // An uncompressed layer: its diff id is its digest.
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "cargo xtask oci-agent"}],
    }))?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::MANIFEST_MEDIA_TYPE,
        "config": descriptor(IMAGE_CONFIG_MEDIA_TYPE, &config, None),
        "layers": [descriptor(LAYER_MEDIA_TYPE, &layer, None)],
        "annotations": {
            "org.opencontainers.image.title": "knhk-agent",
            "org.opencontainers.image.version": tag,
            "org.opencontainers.image.description": "knhk-agent: signed config push, receipts, KMS-signed checkpoints",
        },
    }))?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    put_blob(dir, &config)?;
    put_blob(dir, &layer)?;
    write_index(dir, &manifest, tag)?;
    let written = WrittenImage {
        dir: dir.to_path_buf(),
        manifest_digest: format!("sha256:{}", sha256_hex(&manifest)),
        files: files.into_iter().map(|(p, _, _)| p).collect(),
        tag: tag.to_owned(),
    };
    let checked = check_image(dir)?;
    ensure!(
        checked == written,
        "the image does not read back as written"
    );
    Ok(written)
}

/// The OCI architecture name of this machine.
fn oci_architecture() -> anyhow::Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no OCI architecture name for {other}"),
    })
}

/// Check an agent image layout: the index and manifest (via [`read_index`]), the config's
/// media type, user, entrypoint and `rootfs.diff_ids` (= the layer's digest), one layer of
/// the uncompressed tar type whose blob hashes to its name and holds the binary; the image's
/// digests and files on success.
pub fn check_image(dir: &Path) -> anyhow::Result<WrittenImage> {
    let (tag, md, manifest) = read_index(dir)?;
    ensure!(
        manifest["config"]["mediaType"] == IMAGE_CONFIG_MEDIA_TYPE,
        "manifest: config mediaType {}",
        manifest["config"]["mediaType"]
    );
    let config: Value = serde_json::from_slice(&blob(dir, &manifest["config"])?)
        .context("image config is not JSON")?;
    let layers = layers_of(&manifest, 1, "one uncompressed tar")?;
    ensure!(
        layers[0]["mediaType"] == LAYER_MEDIA_TYPE,
        "layer: mediaType {}",
        layers[0]["mediaType"]
    );
    let layer = blob(dir, &layers[0])?;
    ensure!(
        config["rootfs"]["diff_ids"] == json!([layers[0]["digest"]]),
        "config: rootfs.diff_ids {} is not the layer's digest {}",
        config["rootfs"]["diff_ids"],
        layers[0]["digest"]
    );
    ensure!(
        config["config"]["User"] == format!("{USER}:{USER}"),
        "config: User {} (want the non-root {USER}:{USER})",
        config["config"]["User"]
    );
    ensure!(
        config["config"]["Entrypoint"] == json!([format!("/{BINARY_PATH}")]),
        "config: Entrypoint {}",
        config["config"]["Entrypoint"]
    );
    let mut archive = tar::Archive::new(layer.as_slice());
    let mut files = Vec::new();
    for entry in archive.entries().context("layer is not a tar")? {
        let entry = entry.context("layer is not a tar")?;
        if entry.header().entry_type().is_file() {
            files.push(entry.path()?.to_string_lossy().into_owned());
        }
    }
    ensure!(
        files.iter().any(|f| f == BINARY_PATH),
        "layer: no {BINARY_PATH}"
    );
    Ok(WrittenImage {
        dir: dir.to_path_buf(),
        manifest_digest: md["digest"].as_str().unwrap_or_default().to_owned(),
        files,
        tag,
    })
}

/// `cargo xtask oci-agent`.
#[derive(Debug, clap::Args)]
pub struct OciAgentArgs {
    /// Layout directory (replaced).
    #[arg(long, default_value = "target/oci/knhk-agent")]
    pub out: PathBuf,
    /// Tag recorded in the layout.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// Package this binary instead of building `knhk-agent` with `--release`.
    #[arg(long)]
    pub binary: Option<PathBuf>,
}

/// Build the release agent (unless given), write the image, print its digest.
pub fn run(args: &OciAgentArgs) -> anyhow::Result<()> {
    let binary = match &args.binary {
        Some(p) => p.clone(),
        None => crate::agent_process::build_release()?,
    };
    // Relative to the repository; an absolute path replaces the root when joined.
    let w = write_image(
        &binary,
        &crate::util::repo_root().join(&args.out),
        &args.tag,
    )?;
    println!("oci-agent: {} (tag {})", w.dir.display(), w.tag);
    for file in &w.files {
        println!("oci-agent:   /{file}");
    }
    println!(
        "oci-agent: manifest digest {}  <- image: REGISTRY/knhk-agent@{}",
        w.manifest_digest, w.manifest_digest
    );
    println!(
        "oci-agent: push with e.g. `skopeo copy oci:{}:{} docker://REGISTRY/knhk-agent:{}`",
        w.dir.display(),
        w.tag,
        w.tag
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The agent binary of the test run (`cargo xtask test` sets KNHK_AGENT).
    fn agent() -> Option<PathBuf> {
        let path = std::env::var_os("KNHK_AGENT").filter(|v| !v.is_empty())?;
        Some(PathBuf::from(path))
    }

    /// The image of the real agent reads back against the specs, and its file system is
    /// complete: unpacked and entered with chroot (nothing of the host visible), the binary
    /// runs and answers — its loader and libraries are the image's own.
    #[test]
    fn agent_image_is_complete_and_runs_from_its_own_file_system() {
        let Some(binary) = agent() else {
            assert!(
                !knhk_e2e::paths::require_real(),
                "KNHK_REQUIRE_REAL is set but KNHK_AGENT is not"
            );
            eprintln!("skipped: KNHK_AGENT is not set");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let w = write_image(&binary, &dir.path().join("image"), "9.9.9").unwrap();
        assert!(
            w.files.iter().any(|f| f.contains("libc.so")),
            "{:?}",
            w.files
        );
        assert_eq!(check_image(&w.dir).unwrap(), w);

        let (_, _, manifest) = read_index(&w.dir).unwrap();
        let layer = blob(&w.dir, &manifest["layers"][0]).unwrap();
        let root = dir.path().join("root");
        tar::Archive::new(layer.as_slice()).unpack(&root).unwrap();
        if !crate::setup::is_root() {
            assert!(
                !knhk_e2e::paths::require_real(),
                "entering the image needs root (chroot)"
            );
            eprintln!("skipped the chroot run: not root");
            return;
        }
        // Resolved on the test's PATH: the agent's environment is cleared below.
        let chroot = crate::setup::which("chroot").expect("chroot (Debian coreutils)");
        let out = Command::new(&chroot)
            .arg(&root)
            .arg(format!("/{BINARY_PATH}"))
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the agent did not run inside its image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("knhk-agent"));
        // A command that does real work inside the image: validate a plugin configuration.
        let mut child = Command::new(&chroot)
            .arg(&root)
            .args([&format!("/{BINARY_PATH}"), "validate-config", "-"])
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(br#"{"routing":{"salt":"s","canary_basis_points":100}}"#)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    /// A layer whose blob was changed, or a config that runs as root, fails the check.
    #[test]
    fn tampered_images_fail_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("knhk-agent");
        // A "static binary" for ldd: not a dynamic executable, nothing to bundle.
        std::fs::write(&binary, b"#!/bin/false\n").unwrap();
        let w = write_image(&binary, &dir.path().join("i"), "t").unwrap();
        let (_, _, manifest) = read_index(&w.dir).unwrap();
        let hex = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .strip_prefix("sha256:")
            .unwrap()
            .to_owned();
        let path = w.dir.join("blobs/sha256").join(&hex);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[600] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let e = check_image(&w.dir).unwrap_err().to_string();
        assert!(e.contains("does not hash to its name"), "{e}");
    }
}
