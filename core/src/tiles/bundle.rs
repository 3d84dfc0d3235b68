//! Entry bundles: log entries as big-endian `u16` length-prefixed byte strings, one bundle per
//! level-0 tile. A zero-length entry is a pruned payload (see [`super`]).

use super::{TileError, TileId};

/// Longest entry a bundle can frame.
pub const MAX_ENTRY_LEN: usize = u16::MAX as usize;

/// Encode the entries of `tile`, the first at leaf index `tile.first()`.
pub fn encode(tile: TileId, entries: &[Vec<u8>]) -> Result<Vec<u8>, TileError> {
    let mut out = Vec::with_capacity(entries.iter().map(|e| e.len() + 2).sum());
    for (i, entry) in entries.iter().enumerate() {
        let len = u16::try_from(entry.len()).map_err(|_| TileError::EntryTooLong {
            index: tile.first() + i as u64,
            len: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// Decode the bundle of `tile`: exactly `tile.width` entries and nothing after them.
pub fn decode(tile: TileId, bytes: &[u8]) -> Result<Vec<Vec<u8>>, TileError> {
    let bad = |reason: String| TileError::Bundle {
        path: tile.entries_path(),
        reason,
    };
    let mut out = Vec::with_capacity(usize::from(tile.width));
    let mut rest = bytes;
    while !rest.is_empty() {
        if out.len() == usize::from(tile.width) {
            return Err(bad(format!(
                "{} bytes after its {} entries",
                rest.len(),
                tile.width
            )));
        }
        let [hi, lo, tail @ ..] = rest else {
            return Err(bad("truncated entry length".to_owned()));
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        if tail.len() < len {
            return Err(bad(format!(
                "entry {} claims {len} bytes, {} remain",
                out.len(),
                tail.len()
            )));
        }
        out.push(tail[..len].to_vec());
        rest = &tail[len..];
    }
    if out.len() != usize::from(tile.width) {
        return Err(bad(format!(
            "{} entries, its width is {}",
            out.len(),
            tile.width
        )));
    }
    Ok(out)
}
