//! The policy file watcher: read the file (capped at 64 KiB), publish it when its contents
//! changed and validate, log and keep the epoch in force when they do not.

use std::io::Read as _;
use std::path::Path;
use std::sync::Arc;

use knhk_core::limits::MAX_CONFIG_BYTES;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;

use super::{closed, validate_policy, PolicyService};
use crate::policy::{PolicyError, Source};

/// Outcome of one policy file check.
#[derive(Debug, Clone, PartialEq)]
pub enum FileCheck {
    /// No policy file is configured.
    NoFile,
    /// The contents are the ones seen last time (or already published).
    Unchanged,
    /// A new epoch was published from the file.
    Applied(u64),
    /// The file was unreadable or invalid; the reason. The epoch in force stays.
    Refused(String),
}

#[derive(Debug, Default)]
pub(super) struct FileState {
    /// Hash of the contents last looked at.
    pub(super) seen: Option<String>,
    /// Hash of the contents last published (also persisted).
    pub(super) applied: Option<String>,
    /// Why the file was last refused, cleared when it is accepted.
    pub(super) error: Option<String>,
}

fn read_capped(path: &Path) -> Result<Vec<u8>, PolicyError> {
    let file_err = |source| PolicyError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(file_err)?;
    let mut bytes = Vec::new();
    // One byte over the limit is enough to refuse it as too large.
    file.take(u64::try_from(MAX_CONFIG_BYTES).unwrap_or(u64::MAX) + 1)
        .read_to_end(&mut bytes)
        .map_err(file_err)?;
    Ok(bytes)
}

impl PolicyService {
    /// Check the policy file once: publish it when its contents changed and validate; log and
    /// keep the epoch in force when it does not.
    pub async fn check_file(&self) -> FileCheck {
        let Some(path) = self.file.clone() else {
            return FileCheck::NoFile;
        };
        let read_path = path.clone();
        let read = tokio::task::spawn_blocking(move || read_capped(&read_path))
            .await
            .unwrap_or(Err(PolicyError::Internal("policy file read task failed")));
        let bytes = match read {
            Ok(b) => b,
            Err(e) => return self.refuse_file(&path, false, &e),
        };
        let hash = hex::encode(Sha256::digest(&bytes));
        {
            let Ok(mut s) = self.file_state.lock() else {
                return FileCheck::Refused("file state lock poisoned".to_owned());
            };
            if s.seen.as_deref() == Some(hash.as_str()) {
                return FileCheck::Unchanged;
            }
            s.seen = Some(hash.clone());
            if s.applied.as_deref() == Some(hash.as_str()) {
                s.error = None;
                return FileCheck::Unchanged;
            }
        }
        let policy = match validate_policy(&bytes) {
            Ok(p) => p,
            Err(e) => return self.refuse_file(&path, true, &e),
        };
        match self.set_value(policy, Source::File, Some(hash)).await {
            Ok((epoch, changed)) => {
                if let Ok(mut s) = self.file_state.lock() {
                    s.error = None;
                }
                if changed {
                    tracing::info!(path = %path.display(), epoch = epoch.epoch, "applied policy file");
                    FileCheck::Applied(epoch.epoch)
                } else {
                    FileCheck::Unchanged
                }
            }
            Err(e) => self.refuse_file(&path, false, &e),
        }
    }

    fn refuse_file(&self, path: &Path, retain_seen: bool, e: &PolicyError) -> FileCheck {
        let reason = e.to_string();
        let Ok(mut s) = self.file_state.lock() else {
            return FileCheck::Refused(reason);
        };
        if s.error.as_deref() != Some(reason.as_str()) {
            tracing::error!(
                path = %path.display(),
                error = %reason,
                epoch = self.state.borrow().epoch(),
                "policy file refused; the epoch in force stays"
            );
        }
        if !retain_seen {
            // Unreadable, or refused for a reason other than its contents: look again.
            s.seen = None;
        }
        s.error = Some(reason.clone());
        FileCheck::Refused(reason)
    }

    /// Check the policy file every `watch_interval` until [`PolicyService::close`]; `None`
    /// when no file is configured.
    pub fn spawn_file_watcher(self: &Arc<Self>) -> Option<JoinHandle<()>> {
        self.file.as_ref()?;
        let svc = self.clone();
        let closing = self.closing.subscribe();
        Some(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(svc.config.watch_interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            let stop = closed(closing);
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = &mut stop => return,
                }
                svc.check_file().await;
            }
        }))
    }
}
