//! Printing paths losslessly: Linux paths are bytes, not necessarily UTF-8.

use std::borrow::Cow;

/// A path's bytes as text, losslessly and safe for a terminal: valid UTF-8 is kept as it
/// is, except control characters (C0, DEL and C1: a file name must not move the cursor,
/// forge an output line or send an escape sequence); a backslash becomes `\\`; each byte
/// of a control character and each byte that is not part of valid UTF-8 becomes `\xNN`
/// (two lower-case hex digits). The result reads back unambiguously: [`unescape_path`]
/// undoes it.
///
/// # Examples
/// ```
/// use firehose_consumer::escape_path;
/// assert_eq!(escape_path(b"/tmp/a b"), "/tmp/a b");
/// assert_eq!(escape_path(b"/tmp/\xff\\x"), "/tmp/\\xff\\\\x");
/// assert_eq!(escape_path("/tmp/é".as_bytes()), "/tmp/é");
/// assert_eq!(escape_path(b"/tmp/a\nb\x1b[2J"), "/tmp/a\\x0ab\\x1b[2J");
/// assert_eq!(escape_path("/tmp/\u{9b}31m".as_bytes()), "/tmp/\\xc2\\x9b31m");
/// ```
pub fn escape_path(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(s) = std::str::from_utf8(bytes) {
        if !s.contains(|c: char| c == '\\' || c.is_control()) {
            return Cow::Borrowed(s);
        }
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                // C0, DEL and C1 (`char::is_control` is exactly Cc): each UTF-8 byte.
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
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

    #[test]
    fn no_control_character_survives_escaping() {
        let mut all: Vec<u8> = (0..=255u8).collect();
        all.extend("\u{80}\u{9b}\u{9f}\u{a0}é".as_bytes());
        let text = escape_path(&all);
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert_eq!(unescape_path(&text).unwrap(), all);
        assert!(text.ends_with("\u{a0}é"), "{text:?}");
    }
}
