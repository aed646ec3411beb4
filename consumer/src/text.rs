//! Printing paths losslessly: Linux paths are bytes, not necessarily UTF-8.

use std::borrow::Cow;

/// A path's bytes as text, losslessly: valid UTF-8 is kept as it is (control characters
/// included), a backslash becomes `\\`, and each byte that is not part of valid UTF-8
/// becomes `\xNN` (two lower-case hex digits). The result reads back unambiguously:
/// [`unescape_path`] undoes it.
///
/// # Examples
/// ```
/// use firehose_consumer::escape_path;
/// assert_eq!(escape_path(b"/tmp/a b"), "/tmp/a b");
/// assert_eq!(escape_path(b"/tmp/\xff\\x"), "/tmp/\\xff\\\\x");
/// assert_eq!(escape_path("/tmp/é".as_bytes()), "/tmp/é");
/// ```
pub fn escape_path(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.contains('\\') {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    Cow::Owned(out)
}

/// Undoes [`escape_path`]. `None` if `text` holds an escape `escape_path` never writes.
///
/// # Examples
/// ```
/// use firehose_consumer::{escape_path, unescape_path};
/// let raw = b"/tmp/\xfe\\\xff";
/// assert_eq!(unescape_path(&escape_path(raw)).unwrap(), raw);
/// ```
pub fn unescape_path(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        match b.get(i + 1)? {
            b'\\' => {
                out.push(b'\\');
                i += 2;
            }
            b'x' => {
                let hex = text.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            _ => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255u8).chain([b'\\', b'x', 0xc3, 0xa9]).collect();
        assert_eq!(unescape_path(&escape_path(&all)).unwrap(), all);
    }
}
