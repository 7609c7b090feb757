//! The dependency direction of `agent/`, enforced. The layers are read from
//! the table in `agent/lib.rs`'s documentation (one source for the reader
//! and for this check): a module may refer to modules of lower layers only,
//! never to its own layer or above, so there can be no module cycle.
//! Every `crate::…` path counts (`use`, grouped `use crate::{a, b}`, inline
//! paths), and so does `super::` that climbs to the crate root. Test code
//! (files named `*tests.rs`, and everything after `#[cfg(test)]`) may use
//! any module and is not scanned.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common;

/// Layers from the `layer N: a b c` lines of agent/lib.rs, lowest first.
fn layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let l = line.trim_start_matches("//!").trim();
        let Some(rest) = l.strip_prefix("layer ") else {
            continue;
        };
        let Some((n, mods)) = rest.split_once(':') else {
            continue;
        };
        let Ok(n) = n.trim().parse::<usize>() else {
            continue;
        };
        for m in mods.split_whitespace() {
            out.insert(m.trim_matches(',').to_string(), n);
        }
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file under agent/ (`x/mod.rs` is `x`).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" {
        parts.push(stem.to_string());
    }
    parts
}

fn ident_at(s: &str) -> Option<String> {
    let id: String = s
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

/// The top-level items named by a grouped `{a::b, c, d::{e, f}}` (the text
/// just after the opening brace).
fn group_heads(s: &str) -> Vec<String> {
    let (mut depth, mut heads, mut start) = (0usize, Vec::new(), true);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                start = false;
                if let Some(id) = ident_at(&s[i..]) {
                    heads.push(id);
                }
            }
            _ => {}
        }
    }
    heads
}

/// Top-level crate modules a file refers to.
fn references(text: &str, module: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break;
        }
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            // `ioc_crate::` or `my_crate::` are not `crate::`.
            let before = rest[..i].chars().last();
            let after = &rest[i + "crate::".len()..];
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                match after.strip_prefix('{') {
                    Some(g) => out.extend(group_heads(g)),
                    None => out.extend(ident_at(after)),
                }
            }
            rest = after;
        }
        // `super::` chains that climb to the crate root.
        let mut rest = code;
        while let Some(i) = rest.find("super::") {
            let mut s = &rest[i..];
            let mut ups = 0;
            while let Some(t) = s.strip_prefix("super::") {
                ups += 1;
                s = t;
            }
            if ups >= module.len() {
                out.extend(ident_at(s));
            }
            rest = s;
        }
    }
    out
}

#[test]
fn modules_only_use_lower_layers() {
    let root = common::root().join("agent");
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let layer = layers(&lib);
    assert!(
        layer.len() >= 10,
        "agent/lib.rs lists too few modules in its `layer N:` table: {layer:?}"
    );
    let mut files = Vec::new();
    rs_files(&root, &mut files);
    let mut problems = Vec::new();
    let mut edges = 0;
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        if rel == Path::new("lib.rs")
            || rel == Path::new("main.rs")
            || rel.to_string_lossy().ends_with("tests.rs")
        {
            continue;
        }
        let module = module_path(rel);
        let top = &module[0];
        let Some(&mine) = layer.get(top) else {
            problems.push(format!(
                "agent/{}: module `{top}` is in no layer; add it to the `layer N:` table in agent/lib.rs",
                rel.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for used in references(&text, &module) {
            if &used == top {
                continue;
            }
            edges += 1;
            match layer.get(&used) {
                Some(&theirs) if theirs < mine => {}
                Some(&theirs) => problems.push(format!(
                    "agent/{}: `{top}` (layer {mine}) uses `crate::{used}` (layer {theirs}); \
                     a module may use lower layers only — move the shared item down or pass it in",
                    rel.display()
                )),
                None => {} // an item of lib.rs itself, not a module
            }
        }
    }
    assert!(
        edges > 50,
        "found only {edges} cross-module references; is the scanner broken?"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_sees_every_form_of_path() {
    let m = vec!["rules".to_string(), "kinds".to_string()];
    let text = "use crate::{config::X, store::{A, B}, track};\n\
                let x = crate::infer::f();\n\
                // crate::publish in a comment does not count\n\
                use super::super::evidence::Y;\n\
                use super::Z;\n\
                let y = ioc_crate::no();\n\
                #[cfg(test)]\n\
                use crate::cli::Anything;";
    assert_eq!(
        references(text, &m),
        ["config", "store", "track", "infer", "evidence"]
    );
    let lib = "//! layer 0: base\n//! layer 3: rules, track\n";
    let l = layers(lib);
    assert_eq!(l.get("track"), Some(&3));
    assert_eq!(l.get("base"), Some(&0));
}
