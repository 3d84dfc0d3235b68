//! The byte-level reading and writing shared by the receipt and log-entry encodings: a
//! little-endian field reader, length checks and length-prefixed text.

use super::ReceiptError;

/// Little-endian field reader over a slice already checked to be long enough.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.buf.get(self.pos..self.pos + N) {
            out.copy_from_slice(src);
        }
        self.pos += N;
        out
    }

    pub(super) fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    pub(super) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    pub(super) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    pub(super) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// Append `s` as one length byte and its bytes: 1..=255 bytes, or `InvalidText` naming `field`.
pub(super) fn put_text(
    out: &mut Vec<u8>,
    field: &'static str,
    s: &str,
) -> Result<(), ReceiptError> {
    let len = u8::try_from(s.len())
        .ok()
        .filter(|l| *l > 0)
        .ok_or(ReceiptError::InvalidText {
            field,
            max: usize::from(u8::MAX),
        })?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// `Truncated` unless `buf` holds `n` bytes from `pos`.
pub(super) fn need(buf: &[u8], pos: usize, n: usize) -> Result<(), ReceiptError> {
    if buf.len() < pos + n {
        Err(ReceiptError::Truncated {
            what: "log entry",
            expected: pos + n,
            actual: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Read one length-prefixed text written by [`put_text`]; `InvalidText` naming `field` when it
/// is empty or not UTF-8.
pub(super) fn get_text(r: &mut Reader<'_>, field: &'static str) -> Result<String, ReceiptError> {
    need(r.buf, r.pos, 1)?;
    let len = usize::from(r.u8());
    need(r.buf, r.pos, len)?;
    let bytes = &r.buf[r.pos..r.pos + len];
    r.pos += len;
    let bad = ReceiptError::InvalidText {
        field,
        max: usize::from(u8::MAX),
    };
    if len == 0 {
        return Err(bad);
    }
    core::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| bad)
}
