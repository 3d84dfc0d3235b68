//! The field path of a JSON syntax error, recovered from the error's position in the document.
//!
//! `serde_json` reports where in the text a syntax error happened (line and column) but not
//! which field it belongs to (type and value errors name their path from the reader, see
//! `config::read`). On this rare error path, this module re-reads the document up to the
//! error's position with a small JSON scanner and reports the keys and indices open there:
//! `admission.classes.R1.p99_max_ms`, `routing.key_sources[1]`.

/// One open container while scanning.
enum Frame {
    /// An object: the last key read, and whether its `:` has been seen (its value started).
    Object { key: Option<String>, in_value: bool },
    /// An array: the index of the element being read.
    Array { index: usize },
}

/// Byte offset of a 1-based `line` and 0-based byte `column`, as `serde_json` counts them.
fn offset_of(doc: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match doc[start..].iter().position(|&b| b == b'\n') {
            Some(nl) => start += nl + 1,
            None => return doc.len(),
        }
    }
    start.saturating_add(column).min(doc.len())
}

/// The end (exclusive) of the JSON string whose opening quote is at `open`, and its text
/// (escapes kept as written: config keys are plain names). An unterminated string ends at the
/// end of the document.
fn read_string(doc: &[u8], open: usize) -> (usize, String) {
    let mut i = open + 1;
    while i < doc.len() {
        match doc[i] {
            b'\\' => i += 2,
            b'"' => {
                let text = String::from_utf8_lossy(&doc[open + 1..i]).into_owned();
                return (i + 1, text);
            }
            _ => i += 1,
        }
    }
    let end = doc.len().min(i);
    (
        end,
        String::from_utf8_lossy(&doc[(open + 1).min(end)..end]).into_owned(),
    )
}

/// The dotted path (`a.b[2].c`) of the field being read at `line` and `column` of `doc`, or
/// `None` at the top level.
pub fn path_at(doc: &[u8], line: usize, column: usize) -> Option<String> {
    let offset = offset_of(doc, line, column);
    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < offset {
        match doc[i] {
            b'"' => {
                let (end, text) = read_string(doc, i);
                if let Some(Frame::Object {
                    key,
                    in_value: false,
                }) = stack.last_mut()
                {
                    *key = Some(text);
                }
                i = end;
                continue;
            }
            b'{' => stack.push(Frame::Object {
                key: None,
                in_value: false,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b':' => {
                if let Some(Frame::Object { in_value, .. }) = stack.last_mut() {
                    *in_value = true;
                }
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { key, in_value }) => {
                    *key = None;
                    *in_value = false;
                }
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }
    let mut path = String::new();
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => break,
            Frame::Array { index } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    (!path.is_empty()).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Position of the first occurrence of `marker` in `doc` plus `after` bytes, as
    /// (line, column) the way serde_json reports it.
    fn pos(doc: &str, marker: &str, after: usize) -> (usize, usize) {
        let at = doc.find(marker).unwrap_or(0) + after;
        let line = doc[..at].matches('\n').count() + 1;
        let column = at - doc[..at].rfind('\n').map_or(0, |nl| nl + 1);
        (line, column)
    }

    /// A value inside nested objects is named by its keys, also across lines.
    #[test]
    fn nested_value_is_named_by_its_keys() {
        let doc = "{\"admission\": {\n  \"classes\": {\"R1\": {\"p99_max_ms\": \"x\"}}}}";
        let (l, c) = pos(doc, "\"x\"", 3);
        assert_eq!(
            path_at(doc.as_bytes(), l, c).as_deref(),
            Some("admission.classes.R1.p99_max_ms")
        );
    }

    /// Array elements are named by index; a finished sibling does not leak into the path.
    #[test]
    fn array_elements_are_indexed() {
        let doc = r#"{"routing":{"salt":"a","key_sources":[{"header":"a"},{"query":7}]}}"#;
        let (l, c) = pos(doc, "7", 1);
        assert_eq!(
            path_at(doc.as_bytes(), l, c).as_deref(),
            Some("routing.key_sources[1].query")
        );
    }

    /// A key read without its value names the key.
    #[test]
    fn key_without_value_is_named() {
        let doc = r#"{"routing":{"weight":1}}"#;
        let (l, c) = pos(doc, "\"weight\"", 8);
        assert_eq!(
            path_at(doc.as_bytes(), l, c).as_deref(),
            Some("routing.weight")
        );
    }

    /// Quotes, braces and commas inside strings are not structure; escapes are skipped.
    #[test]
    fn strings_hide_structure() {
        let doc = r#"{"a":"x,}\"]{","b":{"c":true}}"#;
        let (l, c) = pos(doc, "true", 4);
        assert_eq!(path_at(doc.as_bytes(), l, c).as_deref(), Some("b.c"));
    }

    /// Top-level positions, positions past the end and unterminated input give no path or the
    /// path open at the end, never a panic.
    #[test]
    fn top_level_and_truncated_input() {
        assert_eq!(path_at(b"{not json", 1, 2), None);
        assert_eq!(path_at(b"", 1, 0), None);
        assert_eq!(
            path_at(b"{\"a\":{\"b\":\"unterminated", 9, 99).as_deref(),
            Some("a.b")
        );
        assert_eq!(path_at(b"{\"a\":\"\\", 1, 99).as_deref(), Some("a"));
    }
}
