//! The publisher: after every seal (or, with a quorum, every commit) it writes the tiles and
//! entry bundles the new checkpoint needs, then the checkpoint note; after every prune it
//! rewrites the entry bundles that held the pruned payloads.
//!
//! Order makes it crash-safe: a checkpoint note is written only after every tile it needs, so
//! a reader never sees a checkpoint whose tiles are missing, and the published note is the
//! publisher's only state: after a restart it reads the note back and goes on from its size
//! (rewriting what a crash may have left half-written). With a quorum the published note is
//! the newest *committed* checkpoint, carrying its witnesses' cosignatures.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use knhk_core::checkpoint::Checkpoint;
use knhk_core::tiles::layout::{tile_for, tiles_between, TILE_WIDTH};
use knhk_core::tiles::{bundle, note, TileId, CHECKPOINT_PATH};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::store::TileStore;
use super::TilesError;
use crate::quorum::replicator::Replicator;
use crate::receipts::{ReceiptLog, ReceiptStore, ReceiptsError, SignedCheckpoint};

/// Resources written concurrently.
const PARALLEL_WRITES: usize = 16;
/// Pruned leaves read per page when the publisher starts.
const PRUNED_PAGE: u64 = 10_000;
/// Backoff after a failed publication, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What is published.
#[derive(Debug, Default)]
struct Published {
    /// Tree size of the published note; `None` until read back from the destination.
    size: Option<u64>,
    /// The note text written last.
    note: String,
}

/// Publishes one log to one destination.
pub struct Publisher {
    log: Arc<ReceiptLog>,
    store: TileStore,
    quorum: Option<Arc<Replicator>>,
    published: tokio::sync::Mutex<Published>,
    /// Level-0 tile indexes whose bundles hold payloads pruned since they were written.
    dirty: Mutex<BTreeSet<u64>>,
    wake: Notify,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("url", &self.store.url)
            .finish_non_exhaustive()
    }
}

fn blocking_err(e: tokio::task::JoinError) -> TilesError {
    TilesError::Task(e.to_string())
}

/// The hash tile `tile` and, at level 0, its entry bundle, read from `store`.
fn render_tile(store: &ReceiptStore, tile: TileId) -> Result<Vec<(String, Vec<u8>)>, TilesError> {
    let hashes = store.tile_hashes(tile.level, tile.first(), u64::from(tile.width))?;
    let mut out = vec![(tile.path(), hashes.concat())];
    if tile.level == 0 {
        out.push((tile.entries_path(), render_bundle(store, tile)?));
    }
    Ok(out)
}

/// The entry bundle of level-0 `tile`, pruned payloads as zero-length entries.
fn render_bundle(store: &ReceiptStore, tile: TileId) -> Result<Vec<u8>, TilesError> {
    let rows = store.entries(tile.first(), u64::from(tile.width))?;
    if rows.len() != usize::from(tile.width) {
        return Err(TilesError::Receipts(ReceiptsError::Corrupt(format!(
            "{} leaves from {}, expected {}",
            rows.len(),
            tile.first(),
            tile.width
        ))));
    }
    let entries: Vec<Vec<u8>> = rows.into_iter().map(|(_, e)| e).collect();
    Ok(bundle::encode(tile, &entries)?)
}

impl Publisher {
    /// A publisher of `log` to `store`; with `quorum`, only committed checkpoints are
    /// published. Registers itself as the log's prune observer.
    pub fn new(
        log: Arc<ReceiptLog>,
        store: TileStore,
        quorum: Option<Arc<Replicator>>,
    ) -> Arc<Self> {
        let publisher = Arc::new(Publisher {
            log: log.clone(),
            store,
            quorum,
            published: tokio::sync::Mutex::new(Published::default()),
            dirty: Mutex::new(BTreeSet::new()),
            wake: Notify::new(),
        });
        let weak = Arc::downgrade(&publisher);
        log.set_prune_observer(Arc::new(move |indexes: &[u64]| {
            if let Some(p) = weak.upgrade() {
                p.mark_pruned(indexes.iter().copied());
                p.wake.notify_one();
            }
        }));
        publisher
    }

    /// The destination.
    pub fn url(&self) -> &str {
        &self.store.url
    }

    fn set_dirty(&self, tile: u64, dirty: bool) {
        if let Ok(mut set) = self.dirty.lock() {
            if dirty {
                set.insert(tile);
            } else {
                set.remove(&tile);
            }
        }
    }

    fn mark_pruned(&self, indexes: impl Iterator<Item = u64>) {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.extend(indexes.map(|i| i / TILE_WIDTH));
        }
    }

    /// The checkpoint to publish and its cosignatures.
    fn target(&self) -> Result<Option<(SignedCheckpoint, Vec<String>)>, TilesError> {
        match &self.quorum {
            Some(q) => Ok(q.newest_commit()?),
            None => Ok(self.log.latest_checkpoint()?.map(|c| (c, Vec::new()))),
        }
    }

    /// A read snapshot of the log (its own connection).
    fn reader(&self) -> Result<ReceiptStore, TilesError> {
        Ok(self.log.reader()?)
    }

    /// Read the published note back: its size, after checking it is this log's and not longer.
    /// Every bundle below it that holds a pruned payload is marked for rewriting (a prune may
    /// have happened while no publisher ran).
    async fn resume(&self) -> Result<u64, TilesError> {
        let Some(bytes) = self.store.get(CHECKPOINT_PATH).await? else {
            return Ok(0);
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| TilesError::Foreign("a checkpoint that is not UTF-8".to_owned()))?;
        let cp = note::unverified_checkpoint(&text)
            .map_err(|e| TilesError::Foreign(format!("an unreadable checkpoint: {e}")))?;
        let store = self.reader()?;
        let (origin, size) = (store.origin().to_owned(), store.size());
        if cp.origin != origin || cp.tree_size > size {
            return Err(TilesError::Foreign(format!(
                "the log {} at size {}, not a prefix of this agent's log {origin} (size {size})",
                cp.origin, cp.tree_size
            )));
        }
        if cp.root_hash != store.root_at(cp.tree_size)? {
            return Err(TilesError::Foreign(format!(
                "a checkpoint of {} at size {} whose root is not this log's",
                cp.origin, cp.tree_size
            )));
        }
        let pruned = tokio::task::spawn_blocking(move || {
            let mut from = 0;
            let mut found = Vec::new();
            loop {
                let page = store.pruned_indexes(from, cp.tree_size, PRUNED_PAGE)?;
                let Some(&last) = page.last() else {
                    return Ok::<_, ReceiptsError>(found);
                };
                found.extend(page);
                from = last + 1;
            }
        })
        .await
        .map_err(blocking_err)??;
        self.mark_pruned(pruned.into_iter());
        Ok(cp.tree_size)
    }

    /// Write `tiles` (and their bundles) from a snapshot of the log.
    async fn write_tiles(&self, tiles: Vec<TileId>) -> Result<(), TilesError> {
        for chunk in tiles.chunks(PARALLEL_WRITES) {
            let store = self.reader()?;
            let chunk = chunk.to_vec();
            let rendered = tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|t| render_tile(&store, t))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(blocking_err)??;
            let writes = rendered
                .into_iter()
                .flatten()
                .map(|(path, bytes)| async move { self.store.put(&path, bytes).await });
            for result in futures_util::future::join_all(writes).await {
                result?;
            }
        }
        Ok(())
    }

    /// Rewrite the bundles marked by prunes, below `size` (bundles above it are written
    /// pruned when their tiles are).
    async fn rewrite_pruned(&self, size: u64) -> Result<(), TilesError> {
        let indexes: Vec<u64> = {
            let dirty = self.dirty.lock().map_err(|_| ReceiptsError::Poisoned)?;
            dirty.iter().copied().collect()
        };
        for n in indexes {
            let Some(tile) = tile_for(0, n * TILE_WIDTH, size) else {
                continue;
            };
            // Unmarked before the snapshot is taken: a prune committed after this point marks
            // the bundle again and is rewritten by the next pass.
            self.set_dirty(n, false);
            let written = async {
                let store = self.reader()?;
                let bytes = tokio::task::spawn_blocking(move || render_bundle(&store, tile))
                    .await
                    .map_err(blocking_err)??;
                self.store.put(&tile.entries_path(), bytes).await
            };
            if let Err(e) = written.await {
                self.set_dirty(n, true);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Publish the newest checkpoint (the newest committed one with a quorum): its new tiles
    /// and bundles, rewritten pruned bundles, then the note. Returns the published size, or
    /// `None` when there is no checkpoint yet.
    pub async fn publish(&self) -> Result<Option<u64>, TilesError> {
        let mut published = self.published.lock().await;
        let previous = match published.size {
            Some(size) => size,
            None => {
                let size = self.resume().await?;
                published.size = Some(size);
                size
            }
        };
        let Some((checkpoint, cosignatures)) = self.target()? else {
            return Ok(None);
        };
        let cp = Checkpoint::parse(&checkpoint.text).map_err(ReceiptsError::from)?;
        if cp.tree_size < previous {
            // An older commit than what is out there (a quorum lowered by a restart).
            self.rewrite_pruned(previous).await?;
            return Ok(Some(previous));
        }
        let key = self.reader()?.public_key_for(&checkpoint.signature)?;
        let text = note::render(&checkpoint, &key, &cosignatures)?;
        self.write_tiles(tiles_between(previous, cp.tree_size))
            .await?;
        self.rewrite_pruned(cp.tree_size).await?;
        if text != published.note {
            self.store
                .put(CHECKPOINT_PATH, text.clone().into_bytes())
                .await?;
            tracing::debug!(url = %self.store.url, tree_size = cp.tree_size, "published tiles");
        }
        published.size = Some(cp.tree_size);
        published.note = text;
        Ok(Some(cp.tree_size))
    }

    /// Publish after every seal, commit and prune, and retry failures with backoff, until
    /// `stop` changes.
    pub fn spawn(self: &Arc<Self>, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut sealed = this.log.subscribe();
            let mut committed = this.quorum.as_ref().map(|q| q.subscribe_commits());
            let mut retry = RETRY_MIN;
            loop {
                let delay = match this.publish().await {
                    Ok(_) => {
                        retry = RETRY_MIN;
                        None
                    }
                    Err(e) => {
                        tracing::error!(task = "tiles", url = %this.store.url, error = %e, "publishing tiles failed; will retry");
                        let d = retry;
                        retry = (retry * 2).min(RETRY_MAX);
                        Some(d)
                    }
                };
                let commit = async {
                    match committed.as_mut() {
                        Some(c) => c.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                let backoff = async {
                    match delay {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = stop.changed() => return,
                    r = sealed.changed() => if r.is_err() { return },
                    _ = commit => {}
                    _ = this.wake.notified() => {}
                    _ = backoff => {}
                }
            }
        })
    }
}
