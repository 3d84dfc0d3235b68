//! Tile coordinates and paths (`tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`) and which
//! tiles a tree of `size` leaves is made of.
//!
//! Hash `j` of level `L` is the Merkle Tree Hash of leaves `j·256^L .. (j+1)·256^L`; tile `N` of
//! level `L` holds hashes `256·N ..`, 256 of them when full, fewer on the right edge (a
//! *partial* tile, whose width is in its path).

/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Bits of leaf index per tile level.
pub const TILE_HEIGHT: u32 = 8;
/// Path of the checkpoint note.
pub const CHECKPOINT_PATH: &str = "checkpoint";
/// Highest level a path may name (the specification's bound).
pub const MAX_LEVEL: u8 = 63;

/// One hash tile (level ≥ 0) or, at level 0, also its entry bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    /// Level `L`: level 0 holds leaf hashes.
    pub level: u8,
    /// Index `N` within the level.
    pub index: u64,
    /// Hashes in it: 1 to 256 (256 is a full tile, whose path has no width).
    pub width: u16,
}

/// `N` as zero-padded 3-digit path elements, all but the last prefixed by `x`.
fn encode_index(mut n: u64) -> String {
    let mut groups = vec![n % 1000];
    n /= 1000;
    while n > 0 {
        groups.push(n % 1000);
        n /= 1000;
    }
    let last = groups.len() - 1;
    groups
        .iter()
        .rev()
        .enumerate()
        .map(|(i, g)| {
            if i < last {
                format!("x{g:03}")
            } else {
                format!("{g:03}")
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl TileId {
    /// Whether it holds 256 hashes.
    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    fn suffix(&self) -> String {
        if self.is_full() {
            String::new()
        } else {
            format!(".p/{}", self.width)
        }
    }

    /// `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> String {
        format!(
            "tile/{}/{}{}",
            self.level,
            encode_index(self.index),
            self.suffix()
        )
    }

    /// `tile/entries/<N>[.p/<W>]`: the entry bundle beside a level-0 tile.
    pub fn entries_path(&self) -> String {
        format!("tile/entries/{}{}", encode_index(self.index), self.suffix())
    }

    /// Index (at its level) of its first hash.
    pub fn first(&self) -> u64 {
        self.index * TILE_WIDTH
    }

    /// Byte length of the hash tile.
    pub fn byte_len(&self) -> usize {
        usize::from(self.width) * 32
    }
}

/// Complete hashes at `level` in a tree of `size` leaves.
pub fn hashes_at(level: u8, size: u64) -> u64 {
    size.checked_shr(TILE_HEIGHT * u32::from(level))
        .unwrap_or(0)
}

/// The tile holding hash `j` of `level`, as a tree of `size` leaves has it; `None` when that
/// hash is not complete at this size.
pub fn tile_for(level: u8, j: u64, size: u64) -> Option<TileId> {
    let count = hashes_at(level, size);
    if j >= count {
        return None;
    }
    let index = j / TILE_WIDTH;
    let width = (count - index * TILE_WIDTH).min(TILE_WIDTH);
    Some(TileId {
        level,
        index,
        width: u16::try_from(width).unwrap_or(256),
    })
}

/// The tiles of a tree of `size` leaves that a tree of `previous` leaves did not have: tiles that
/// filled since, and the partial right edge at every level. Level order, then index order.
pub fn tiles_between(previous: u64, size: u64) -> Vec<TileId> {
    let mut out = Vec::new();
    if size <= previous {
        return out;
    }
    for level in 0..=MAX_LEVEL {
        let count = hashes_at(level, size);
        if count == 0 {
            break;
        }
        let before = hashes_at(level, previous);
        for index in before / TILE_WIDTH..=(count - 1) / TILE_WIDTH {
            let width = (count - index * TILE_WIDTH).min(TILE_WIDTH);
            if index * TILE_WIDTH + width > before {
                out.push(TileId {
                    level,
                    index,
                    width: u16::try_from(width).unwrap_or(256),
                });
            }
        }
    }
    out
}
