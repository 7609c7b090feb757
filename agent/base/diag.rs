//! Problems found in a config file, located as `line:column` in its text.
//! Used by the config loader and by every module that checks its own part of
//! the config (rules).

use std::ops::Range;

/// One problem found in a config file, located in the file.
#[derive(Debug, Clone)]
pub struct Problem {
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

/// Collects the problems of one config text, each located by its span.
pub struct Collector<'a> {
    text: &'a str,
    problems: Vec<Problem>,
}

impl<'a> Collector<'a> {
    pub fn new(text: &'a str) -> Collector<'a> {
        Collector {
            text,
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
        let (line, column) = line_col(self.text, span.start);
        self.problems.push(Problem {
            line,
            column,
            message: message.into(),
        });
    }
}
