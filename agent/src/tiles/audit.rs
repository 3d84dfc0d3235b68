//! `knhk-agent verify --tiles URL`: judge a published log from its tiles alone.
//!
//! The checkpoint note is opened with the auditor's trusted log keys. With `--index`, the
//! receipt's proof bundle is rebuilt from the tiles (the same document the agent serves) and
//! judged by the same verifier as a bundle file. Without it, the checkpoint's signature and
//! quorum are checked and every tile and entry bundle is audited against the root.

use std::future::Future;

use knhk_core::checkpoint::{verify_signature, PublicKeyVersion};
use knhk_core::cosignature::WitnessKey;
use knhk_core::tiles::read::Tiles;
use knhk_core::tiles::{note, TileError, CHECKPOINT_PATH};
use knhk_core::verify::quorum::verify_cosignature_lines;
use knhk_core::verify::Verdict;

use super::store::TileStore;
use super::TilesError;

/// Resources fetched at once.
const PARALLEL_READS: usize = 32;
/// Fetch rounds before a computation is given up on (each names everything it lacks).
const MAX_ROUNDS: usize = 16;

/// What the auditor trusts and asks.
#[derive(Debug, Clone)]
pub struct TilesCheck {
    /// The log's public key versions.
    pub trusted: Vec<PublicKeyVersion>,
    /// Required signatures and the witness keys that count.
    pub quorum: Option<(usize, Vec<WitnessKey>)>,
    /// One receipt to prove; `None` audits the whole tree.
    pub index: Option<u64>,
}

/// Run `f` over `tiles`, fetching from `store` whatever it names as missing, until it needs
/// nothing more. A resource that does not exist is [`TileError::Missing`].
pub async fn resolve<T>(
    tiles: &mut Tiles,
    store: &TileStore,
    f: impl Fn(&Tiles) -> Result<T, TileError>,
) -> Result<T, TilesError> {
    for _ in 0..MAX_ROUNDS {
        let result = f(tiles);
        let missing: Vec<String> = tiles.take_missing().into_iter().collect();
        if missing.is_empty() {
            return Ok(result?);
        }
        for chunk in missing.chunks(PARALLEL_READS) {
            let reads = chunk.iter().map(|p| async move { (p, store.get(p).await) });
            for (path, read) in futures_util::future::join_all(reads).await {
                let bytes = read?.ok_or_else(|| TileError::Missing(path.clone()))?;
                tiles.insert(path.clone(), bytes);
            }
        }
    }
    Err(TilesError::Tile(TileError::Mismatch(
        "the tiles kept naming further resources".to_owned(),
    )))
}

fn fail(lines: Vec<String>, reason: impl std::fmt::Display) -> Verdict {
    Verdict {
        ok: false,
        lines,
        failure: Some(reason.to_string()),
    }
}

async fn judged<F: Future<Output = Result<Verdict, TilesError>>>(f: F) -> Verdict {
    f.await.unwrap_or_else(|e| fail(Vec::new(), e))
}

/// The verdict on the log published at `store`.
pub async fn check(store: &TileStore, ask: &TilesCheck) -> Verdict {
    judged(async {
        let Some(bytes) = store.get(CHECKPOINT_PATH).await? else {
            return Ok(fail(Vec::new(), format!("no checkpoint at {}", store.url)));
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| TileError::Note("not UTF-8".to_owned()))?;
        let opened = note::open(&text, &ask.trusted)?;
        let size = opened.parsed.tree_size;
        let mut lines = vec![format!(
            "read from {}: checkpoint of {} at tree size {size}",
            store.url, opened.parsed.origin
        )];
        let mut tiles = Tiles::new(size);
        if let Some(index) = ask.index {
            let bundle = resolve(&mut tiles, store, |t| t.proof_bundle(&opened, index)).await?;
            let json = serde_json::to_vec(&bundle).map_err(|e| TileError::Note(e.to_string()))?;
            let mut verdict = knhk_core::verify::check(
                &json,
                Some(&ask.trusted),
                false,
                ask.quorum.as_ref().map(|(k, w)| (*k, w.as_slice())),
            );
            lines.append(&mut verdict.lines);
            verdict.lines = lines;
            return Ok(verdict);
        }
        let key = match verify_signature(
            opened.checkpoint.text.as_bytes(),
            &opened.checkpoint.signature,
            &ask.trusted,
        ) {
            Ok(k) => k,
            Err(e) => return Ok(fail(lines, format!("checkpoint signature: {e}"))),
        };
        lines.push(format!(
            "checkpoint signed by {} key {} version {}",
            key.provider, key.key_id, key.version
        ));
        if let Some((k, witnesses)) = &ask.quorum {
            match verify_cosignature_lines(&opened.checkpoint.text, &opened.cosignatures, *k, witnesses) {
                Ok(mut more) => lines.append(&mut more),
                Err(e) => return Ok(fail(lines, e)),
            }
        }
        let root = opened.parsed.root_hash;
        match resolve(&mut tiles, store, |t| t.audit(&root)).await {
            Ok(audit) => {
                lines.push(format!(
                    "{} tiles and {} entries ({} pruned, kept as leaf hashes) lead to the checkpoint's root",
                    audit.tiles,
                    audit.entries + audit.pruned,
                    audit.pruned
                ));
                Ok(Verdict {
                    ok: true,
                    lines,
                    failure: None,
                })
            }
            Err(e) => Ok(fail(lines, e)),
        }
    })
    .await
}
