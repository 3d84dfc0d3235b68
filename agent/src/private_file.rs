//! Creating a file only its owner may read (signing seeds, the digest key): written whole to
//! a temporary sibling with mode 0600, synced, renamed into place, and the directory synced,
//! so a crash leaves either no file or the whole one — never a partial secret.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// Create `path` holding `bytes`, readable by its owner only. An existing `path` is an
/// `AlreadyExists` error (nothing is overwritten); a leftover temporary file from a crash is
/// replaced. On error, the path the failure concerns and the I/O error.
pub fn create(path: &Path, bytes: &[u8]) -> Result<(), (PathBuf, std::io::Error)> {
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |e| (p, e)
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    // A leftover temp file from a crash mid-write holds nothing committed.
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(at(&tmp))?;
    f.write_all(bytes).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    drop(f);
    if path.exists() {
        let _ = fs::remove_file(&tmp);
        return Err((path.to_path_buf(), std::io::ErrorKind::AlreadyExists.into()));
    }
    fs::rename(&tmp, path).map_err(at(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// The file holds the bytes with mode 0600, no temporary file stays, and an existing file
    /// is never overwritten.
    #[test]
    fn creates_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        create(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (at, e) = create(&path, b"second").unwrap_err();
        assert_eq!(
            (at, e.kind()),
            (path.clone(), std::io::ErrorKind::AlreadyExists)
        );
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }
}
