//! Problems found in a config file, located as `line:column` in its text.
//! Used by the config loader and by every module that checks its own part of
//! the config (rules).

use std::ops::Range;
use std::path::PathBuf;

/// One problem found in a config file, located in the file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The file the problem is in when it is not the config file itself
    /// (the setup page's file merged over it).
    pub file: Option<PathBuf>,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Byte offset → 1-based (line, column in characters).
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, col)
}

/// A second text whose spans start at `offset` (it was parsed after
/// `offset` bytes of padding), reported as its own file.
struct Layer<'a> {
    text: &'a str,
    offset: usize,
    file: PathBuf,
}

/// Collects the problems of one config text, each located by its span.
pub struct Collector<'a> {
    text: &'a str,
    layer: Option<Layer<'a>>,
    problems: Vec<Problem>,
}

impl<'a> Collector<'a> {
    pub fn new(text: &'a str) -> Collector<'a> {
        Collector {
            text,
            layer: None,
            problems: Vec::new(),
        }
    }

    /// A collector for a config text and a file merged over it, whose spans
    /// start at `offset` (see [`pad_for_layer`]).
    pub fn with_layer(
        text: &'a str,
        layer_text: &'a str,
        offset: usize,
        file: PathBuf,
    ) -> Collector<'a> {
        Collector {
            text,
            layer: Some(Layer {
                text: layer_text,
                offset,
                file,
            }),
            problems: Vec::new(),
        }
    }

    /// The problems found so far, in the order they were reported.
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Reports at `key` inside TOML table `[table]` (or at the table header,
    /// or the start of the file when neither is written).
    pub fn at_key(&mut self, table: &str, key: &str, message: impl Into<String>) {
        let header = format!("[{table}]");
        let start = self
            .text
            .match_indices(&header)
            .map(|(i, _)| i)
            .find(|&i| i == 0 || self.text.as_bytes()[i - 1] == b'\n');
        let pos = start.map(|s| {
            let body = &self.text[s + header.len()..];
            let end = body.find("\n[").unwrap_or(body.len());
            body[..end]
                .match_indices(key)
                .map(|(i, _)| i)
                .find(|&i| i == 0 || body.as_bytes()[i - 1] == b'\n')
                .map(|i| s + header.len() + i)
                .unwrap_or(s)
        });
        let p = pos.unwrap_or(0);
        self.at(p..p, message);
    }

    /// Reports at the start of `span` (a byte range of the text).
    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (file, (line, column)) = match &self.layer {
            Some(l) if span.start >= l.offset => (
                Some(l.file.clone()),
                line_col(l.text, span.start - l.offset),
            ),
            _ => (None, line_col(self.text, span.start)),
        };
        self.problems.push(Problem {
            file,
            line,
            column,
            message: message.into(),
        });
    }
}

/// `layer` preceded by blank padding as long as `base` plus a newline, so
/// that spans parsed from it never overlap spans of `base`; the padding's
/// length is the layer's offset.
pub fn pad_for_layer(base: &str, layer: &str) -> (String, usize) {
    let offset = base.len() + 1;
    let mut s = String::with_capacity(offset + layer.len());
    s.extend(std::iter::repeat_n(' ', base.len()));
    s.push('\n');
    s.push_str(layer);
    (s, offset)
}
