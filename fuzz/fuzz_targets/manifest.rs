//! Model manifests (`models/<name>.toml`, also what a site adds).
#![no_main]
use std::path::Path;

use ioc_agent::infer::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Manifest::parse(text, Path::new("fuzz.toml"));
    }
});
