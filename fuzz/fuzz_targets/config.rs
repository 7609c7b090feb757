//! The config loader and checker (`check-config`, the agent's start): any
//! text, and any setup-page file merged over a valid config, must give a
//! config or problems, never a panic; an accepted config must convert to
//! every stage's settings.
#![no_main]
use std::path::Path;

use ioc_agent::config::{Config, Setup};
use libfuzzer_sys::fuzz_target;

const BASE: &str = "agent_id = \"a\"\n[mqtt]\nurl = \"mqtt://127.0.0.1\"\n[[cameras]]\nid = \"c\"\nurl = \"rtsp://10.0.0.1/s\"\n";

fn use_it(cfg: &Config) {
    let _ = cfg.mqtt_settings();
    let _ = cfg.signal_topics();
    let _ = cfg.http_users();
    let _ = cfg.warnings();
    for c in &cfg.cameras {
        let _ = c.source_settings();
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The whole text as a config file.
    if let Ok(cfg) = Config::parse(text, Path::new("fuzz.toml"), Path::new(".")) {
        use_it(&cfg);
    }
    // The text as the setup page's file over a valid config.
    let setup = Path::new("setup.toml");
    if let Ok(cfg) = Config::parse_with(
        BASE,
        Path::new("agent.toml"),
        Path::new("."),
        Setup::Text(text, setup),
    ) {
        use_it(&cfg);
    }
});
