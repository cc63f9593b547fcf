//! Bounds on a configuration file before anything expands it.
//!
//! The YAML loader behind the `config` crate expands aliases into copies and
//! recurses once per nesting level, so a 500-byte alias bomb becomes
//! gigabytes and a deeply nested file overflows the stack. Start-up,
//! `config validate` and SIGHUP all come through here first: the file is
//! read with a size cap, checked to be UTF-8, then walked as a stream of
//! parser events (no tree is built) to bound its depth and its size with
//! every alias expanded.

use super::load::Problem;
use std::io::Read;
use std::path::Path;
use yaml_rust2::parser::{Event, Parser};

/// The largest configuration file accepted: real ones are a few KiB.
pub const MAX_BYTES: u64 = 1 << 20;
/// The deepest nesting of sequences and mappings accepted.
pub const MAX_DEPTH: usize = 64;
/// The most nodes the document may have once every alias is expanded.
pub const MAX_EXPANDED_NODES: u64 = 200_000;

/// Why a file's text could not be had.
#[derive(Debug)]
pub enum ReadError {
    /// It could not be opened or read.
    Io(std::io::Error),
    /// It was read and refused: too large, or not UTF-8.
    Refused(Problem),
}

/// The file's text, refused when it is larger than [`MAX_BYTES`] or not UTF-8.
pub fn read(path: &Path) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_BYTES + 1).read_to_end(&mut bytes).map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ReadError::Refused(too_large()));
    }
    String::from_utf8(bytes).map_err(|e| {
        ReadError::Refused(Problem::new(
            "(file)",
            format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
        ))
    })
}

fn too_large() -> Problem {
    Problem::new("(file)", format!("larger than the limit of {} KiB", MAX_BYTES / 1024))
}

/// Refuses a document nested deeper than [`MAX_DEPTH`] or larger than
/// [`MAX_EXPANDED_NODES`] with its aliases expanded. Runs in time and memory
/// proportional to the text.
pub fn check_shape(text: &str) -> Result<(), Problem> {
    if text.len() as u64 > MAX_BYTES {
        return Err(too_large());
    }
    // Open collections: (anchor id, nodes inside so far).
    let mut open: Vec<(usize, u64)> = Vec::new();
    // Expanded size of each anchored node, by anchor id.
    let mut anchored: std::collections::HashMap<usize, u64> = std::collections::HashMap::new();
    let mut total: u64 = 0;
    let mut parser = Parser::new_from_str(text);
    loop {
        let (event, marker) = parser.next_token().map_err(|e| Problem::new("(syntax)", e.to_string()))?;
        // The size of the node this event completes, if it completes one.
        let finished = match event {
            Event::StreamEnd => break,
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(Problem::new(
                        "(syntax)",
                        format!("nested deeper than {MAX_DEPTH} levels (line {})", marker.line()),
                    ));
                }
                open.push((anchor, 1));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, size) = open.pop().unwrap_or((0, 1));
                if anchor != 0 {
                    anchored.insert(anchor, size);
                }
                Some(size)
            }
            Event::Scalar(_, _, anchor, _) => {
                if anchor != 0 {
                    anchored.insert(anchor, 1);
                }
                Some(1)
            }
            Event::Alias(id) => Some(anchored.get(&id).copied().unwrap_or(1)),
            _ => None,
        };
        if let Some(size) = finished {
            match open.last_mut() {
                Some((_, inside)) => *inside = inside.saturating_add(size),
                None => total = total.saturating_add(size),
            }
            let expanded = total.saturating_add(open.iter().map(|(_, n)| *n).fold(0u64, u64::saturating_add));
            if expanded > MAX_EXPANDED_NODES {
                return Err(Problem::new(
                    "(syntax)",
                    format!(
                        "more than {MAX_EXPANDED_NODES} values once its aliases are expanded (line {}); \
                         write the values out instead of repeating anchors",
                        marker.line()
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alias_bomb_is_refused_without_expanding_it() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = check_shape(&text).unwrap_err();
        assert!(err.message.contains("aliases are expanded"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_at_the_limit() {
        let deep = "- ".repeat(100_000) + "x\n";
        let err = check_shape(&deep).unwrap_err();
        assert!(err.message.contains("nested deeper than 64"), "{err}");
        let flow = "[".repeat(100_000);
        assert!(check_shape(&flow).is_err());
        let fine = "- ".repeat(10) + "x\n";
        check_shape(&fine).unwrap();
    }

    #[test]
    fn ordinary_anchors_and_the_shipped_config_pass() {
        check_shape("defaults: &d {fps: 15}\ncameras:\n  - {id: a, <<: *d}\n  - {id: b, <<: *d}\n").unwrap();
        check_shape(super::super::load::EMBEDDED).unwrap();
    }

    #[test]
    fn size_and_encoding_are_checked_when_reading() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        std::fs::write(&big, vec![b'#'; (MAX_BYTES + 10) as usize]).unwrap();
        let refused = |path: &Path| match read(path) {
            Err(ReadError::Refused(problem)) => problem.message,
            other => panic!("{other:?}"),
        };
        assert!(refused(&big).contains("limit of 1024 KiB"));
        let latin1 = dir.path().join("latin1.yaml");
        std::fs::write(&latin1, b"cameras: []\n# caf\xe9\n").unwrap();
        assert!(refused(&latin1).contains("not UTF-8 text (invalid byte at offset 17)"));
    }
}
