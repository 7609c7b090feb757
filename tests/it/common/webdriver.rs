//! A minimal WebDriver client (chromedriver + Debian's headless Chromium)
//! for the browser tests.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Proc, free_port};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A minimal WebDriver client over HTTP.
pub struct Driver {
    base: String,
    session: String,
    _proc: Proc,
}

fn call(method: &str, url: &str, body: Option<Value>) -> Value {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(60))
        .build();
    let req = agent.request(method, url);
    let resp = match body {
        Some(b) => req
            .set("Content-Type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let resp = match resp {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            panic!(
                "{method} {url}: {code} {}",
                r.into_string().unwrap_or_default()
            )
        }
        Err(e) => panic!("{method} {url}: {e}"),
    };
    serde_json::from_str(&resp.into_string().unwrap()).unwrap()
}

impl Driver {
    pub fn start(profile: &Path) -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian package chromium-driver; `make test` installs it)");
        let proc = Proc {
            child,
            name: "chromedriver",
        };
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--autoplay-policy=no-user-gesture-required", "--mute-audio", "--window-size=1600,1200",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let v = call("POST", &format!("{base}/session"), Some(caps));
        let session = v["value"]["sessionId"].as_str().unwrap().to_string();
        call(
            "POST",
            &format!("{base}/session/{session}/timeouts"),
            Some(json!({"script": 30000, "implicit": 0})),
        );
        Driver {
            base,
            session,
            _proc: proc,
        }
    }
    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }
    pub fn goto(&self, u: &str) {
        call("POST", &self.url("/url"), Some(json!({"url": u})));
    }
    pub fn find(&self, css: &str) -> Option<String> {
        let v = call(
            "POST",
            &self.url("/elements"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v["value"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|e| e[ELEMENT].as_str())
            .map(str::to_string)
    }
    pub fn wait_find(&self, css: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            assert!(
                start.elapsed() < timeout,
                "no element {css} after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    pub fn type_in(&self, el: &str, text: &str) {
        call(
            "POST",
            &self.url(&format!("/element/{el}/value")),
            Some(json!({"text": text})),
        );
    }
    pub fn click(&self, el: &str) {
        call(
            "POST",
            &self.url(&format!("/element/{el}/click")),
            Some(json!({})),
        );
    }
    pub fn script(&self, js: &str) -> Value {
        call(
            "POST",
            &self.url("/execute/sync"),
            Some(json!({"script": js, "args": []})),
        )["value"]
            .clone()
    }
    pub fn script_async(&self, js: &str) -> Value {
        call(
            "POST",
            &self.url("/execute/async"),
            Some(json!({"script": js, "args": []})),
        )["value"]
            .clone()
    }
}

impl Driver {
    /// A real mouse click at `(dx, dy)` pixels from the element's centre.
    pub fn click_at(&self, el: &str, dx: i64, dy: i64) {
        let actions = json!({"actions": [{
            "type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"},
            "actions": [
                {"type": "pointerMove", "duration": 0, "origin": {ELEMENT: el}, "x": dx, "y": dy},
                {"type": "pointerDown", "button": 0},
                {"type": "pointerUp", "button": 0}
            ]
        }]});
        call("POST", &self.url("/actions"), Some(actions));
    }
}

impl Driver {
    /// Real key presses (WebDriver actions) to whatever has the focus, one
    /// key per character of `keys` (WebDriver key codes such as `\u{E015}`,
    /// arrow down, work too).
    pub fn press(&self, keys: &str) {
        let mut seq = Vec::new();
        for k in keys.chars() {
            seq.push(json!({"type": "keyDown", "value": k.to_string()}));
            seq.push(json!({"type": "keyUp", "value": k.to_string()}));
        }
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": seq}]});
        call("POST", &self.url("/actions"), Some(actions));
        call("DELETE", &self.url("/actions"), None);
    }
}

impl Driver {
    /// A Chrome DevTools Protocol command through chromedriver (e.g.
    /// `Page.addScriptToEvaluateOnNewDocument`, `Page.setBypassCSP`).
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        call(
            "POST",
            &self.url("/goog/cdp/execute"),
            Some(json!({"cmd": cmd, "params": params})),
        )["value"]
            .clone()
    }

    /// The text of the open alert, confirm or prompt dialog, if one is open.
    pub fn dialog_text(&self) -> Option<String> {
        match ureq::get(&self.url("/alert/text")).call() {
            Ok(r) => {
                let v: Value = serde_json::from_str(&r.into_string().unwrap()).unwrap();
                Some(v["value"].as_str().unwrap_or_default().to_string())
            }
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => panic!("GET alert/text: {e}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.base, self.session)).call();
    }
}
