//! Traffic-signal state: read from the signal head in the picture (lamp
//! brightness and colour in YUV, with hysteresis), or received from the
//! traffic controller over MQTT.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::{SignalConfig, SignalSource};
use super::controller::Refusal;
use crate::decode::Frame;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Light {
    Red,
    Yellow,
    Green,
    Unknown,
}

impl Light {
    /// `red`, `yellow`/`amber`, `green`, plain or as JSON `{"state": "red"}`.
    pub fn parse(payload: &[u8]) -> Option<Light> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        if text.starts_with('{') {
            let v: serde_json::Value = serde_json::from_str(text).ok()?;
            Light::from_word(v.get("state")?.as_str()?)
        } else {
            Light::from_word(text.trim_matches('"'))
        }
    }

    /// One state word, case-insensitive: `red`, `yellow`/`amber`, `green`,
    /// `off`/`unknown`/`flashing`.
    pub fn from_word(word: &str) -> Option<Light> {
        match word.to_ascii_lowercase().as_str() {
            "red" => Some(Light::Red),
            "yellow" | "amber" => Some(Light::Yellow),
            "green" => Some(Light::Green),
            "off" | "unknown" | "flashing" => Some(Light::Unknown),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Light::Red => "red",
            Light::Yellow => "yellow",
            Light::Green => "green",
            Light::Unknown => "unknown",
        }
    }
}

/// Mean luma and chroma over a normalised box of an I420 frame.
fn mean_yuv(f: &Frame, b: [f64; 4]) -> (f32, f32, f32) {
    let (w, h) = (f.width as f64, f.height as f64);
    let x0 = ((b[0].min(b[2]) * w) as usize).min(f.width as usize - 1);
    let x1 = ((b[0].max(b[2]) * w).ceil() as usize).clamp(x0 + 1, f.width as usize);
    let y0 = ((b[1].min(b[3]) * h) as usize).min(f.height as usize - 1);
    let y1 = ((b[1].max(b[3]) * h).ceil() as usize).clamp(y0 + 1, f.height as usize);
    let (mut sy, mut su, mut sv, mut n) = (0u64, 0u64, 0u64, 0u64);
    let cw = f.chroma_width();
    for y in y0..y1 {
        for x in x0..x1 {
            sy += f.y()[y * f.width as usize + x] as u64;
            su += f.u()[(y / 2) * cw + x / 2] as u64;
            sv += f.v()[(y / 2) * cw + x / 2] as u64;
            n += 1;
        }
    }
    let n = n.max(1) as f32;
    (sy as f32 / n, su as f32 / n, sv as f32 / n)
}

/// One frame's reading of the two lamps, before hysteresis.
pub fn classify(f: &Frame, red: [f64; 4], green: [f64; 4]) -> Light {
    let (ry, _ru, rv) = mean_yuv(f, red);
    let (gy, _gu, gv) = mean_yuv(f, green);
    // A lit red lamp is bright and red (high V); a lit green lamp is bright
    // and green (low V). Compare the two lamps with each other, so that night
    // (everything dark) and glare (everything bright) cancel out.
    let red_on = rv > 145.0 && ry > 60.0 && ry > gy + 20.0;
    let green_on = gv < 120.0 && gy > 60.0 && gy > ry + 20.0;
    match (red_on, green_on) {
        (true, false) => Light::Red,
        (false, true) => Light::Green,
        _ => Light::Unknown,
    }
}

/// The signal head read from the picture, with hysteresis: a new colour must
/// persist for `hold` frames before the state changes.
#[derive(Debug, Clone)]
pub struct ImageSignal {
    red: [f64; 4],
    green: [f64; 4],
    hold: u32,
    state: Light,
    candidate: Light,
    count: u32,
}

impl ImageSignal {
    pub fn new(red: [f64; 4], green: [f64; 4], hold: u32) -> ImageSignal {
        ImageSignal {
            red,
            green,
            hold: hold.max(1),
            state: Light::Unknown,
            candidate: Light::Unknown,
            count: 0,
        }
    }

    pub fn observe(&mut self, f: &Frame) -> Light {
        let now = classify(f, self.red, self.green);
        if now == self.state {
            self.count = 0;
        } else if now == self.candidate {
            self.count += 1;
            if self.count >= self.hold {
                self.state = now;
                self.count = 0;
            }
        } else {
            self.candidate = now;
            self.count = 1;
            if self.hold <= 1 {
                self.state = now;
                self.count = 0;
            }
        }
        self.state
    }
}

/// What the controller subscriber did with the messages it received.
#[derive(Debug, Default)]
pub struct SignalCounters {
    /// Messages whose state was taken.
    pub accepted: AtomicU64,
    /// Messages refused, by [`Refusal::index`].
    pub refused: [AtomicU64; Refusal::ALL.len()],
    /// Topics currently subscribed.
    pub topics: AtomicU64,
}

/// Latest signal state per topic, and what the subscriber counted.
#[derive(Default)]
pub struct SignalBoard {
    map: Mutex<HashMap<String, (Light, Instant)>>,
    pub counters: SignalCounters,
}

impl SignalBoard {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Light, Instant)>> {
        match self.map.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        }
    }

    /// A state received now.
    pub fn set(&self, topic: &str, light: Light) {
        self.set_aged(topic, light, Duration::ZERO);
    }

    /// A state the controller stated `age` ago (it expires that much sooner).
    pub fn set_aged(&self, topic: &str, light: Light, age: Duration) {
        let now = Instant::now();
        let at = now.checked_sub(age).unwrap_or(now);
        self.map().insert(topic.to_string(), (light, at));
    }

    /// Forgets a topic no camera reads any more.
    pub fn forget(&self, topic: &str) {
        self.map().remove(topic);
    }

    /// The state on `topic`, `Unknown` when never seen or older than `max_age`.
    pub fn get(&self, topic: &str, max_age: Duration) -> Light {
        match self.map().get(topic) {
            Some((l, at)) if at.elapsed() <= max_age => *l,
            _ => Light::Unknown,
        }
    }
}

/// Where a camera's signal state comes from.
pub enum SignalReader {
    None,
    Image(ImageSignal),
    Mqtt(Arc<SignalBoard>, String, Duration),
}

impl SignalReader {
    /// The reader for a camera's `[cameras.signal]` (None without one, or
    /// when its MQTT board is not running).
    pub fn new(sig: Option<&SignalConfig>, board: Option<Arc<SignalBoard>>) -> SignalReader {
        let Some(sig) = sig else {
            return SignalReader::None;
        };
        let corners = |b: &Option<serde_spanned::Spanned<Vec<[f64; 2]>>>| {
            b.as_ref().and_then(|b| {
                let p = b.get_ref();
                Some([p.first()?[0], p.first()?[1], p.get(1)?[0], p.get(1)?[1]])
            })
        };
        match sig.source.get_ref() {
            SignalSource::Image => match (corners(&sig.red_lamp), corners(&sig.green_lamp)) {
                (Some(r), Some(g)) => SignalReader::Image(ImageSignal::new(r, g, sig.hold_frames)),
                _ => SignalReader::None,
            },
            SignalSource::Mqtt => match (board, &sig.topic) {
                (Some(b), Some(t)) => SignalReader::Mqtt(
                    b,
                    t.get_ref().clone(),
                    crate::base::secs(sig.max_age_secs.max(0.1)),
                ),
                _ => SignalReader::None,
            },
        }
    }

    /// The state for this frame and where it came from.
    pub fn read(&mut self, frame: &Frame) -> Option<(Light, SignalSource)> {
        match self {
            SignalReader::None => None,
            SignalReader::Image(s) => Some((s.observe(frame), SignalSource::Image)),
            SignalReader::Mqtt(b, t, age) => Some((b.get(t, *age), SignalSource::Mqtt)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark 100x100 frame with a red lamp at (10..20, 10..20) and a green
    /// lamp at (10..20, 30..40), each lit or not.
    fn frame(red_on: bool, green_on: bool, ambient: u8) -> Frame {
        let mut f = Frame::blank(100, 100);
        f.y_mut().fill(ambient);
        f.u_mut().fill(128);
        f.v_mut().fill(128);
        let paint = |f: &mut Frame, y0: usize, yv: u8, u: u8, v: u8| {
            for y in y0..y0 + 10 {
                for x in 10..20 {
                    f.y_mut()[y * 100 + x] = yv;
                }
            }
            for y in y0 / 2..(y0 + 10) / 2 {
                for x in 5..10 {
                    f.u_mut()[y * 50 + x] = u;
                    f.v_mut()[y * 50 + x] = v;
                }
            }
        };
        if red_on {
            paint(&mut f, 10, 110, 100, 210);
        }
        if green_on {
            paint(&mut f, 30, 150, 110, 70);
        }
        f
    }

    const RED: [f64; 4] = [0.1, 0.1, 0.2, 0.2];
    const GREEN: [f64; 4] = [0.1, 0.3, 0.2, 0.4];

    #[test]
    fn reads_red_and_green_at_night_and_under_glare() {
        for ambient in [16u8, 40] {
            assert_eq!(
                classify(&frame(true, false, ambient), RED, GREEN),
                Light::Red
            );
            assert_eq!(
                classify(&frame(false, true, ambient), RED, GREEN),
                Light::Green
            );
            assert_eq!(
                classify(&frame(false, false, ambient), RED, GREEN),
                Light::Unknown
            );
        }
        // Both lamps bright (glare, or a sensor bloom): never read as red when
        // the green lamp is the brighter one.
        assert_ne!(classify(&frame(true, true, 16), RED, GREEN), Light::Red);
    }

    #[test]
    fn hysteresis_ignores_single_frame_flicker() {
        let mut s = ImageSignal::new(RED, GREEN, 3);
        let (r, g) = (frame(true, false, 20), frame(false, true, 20));
        for _ in 0..3 {
            s.observe(&r);
        }
        assert_eq!(s.observe(&r), Light::Red);
        assert_eq!(s.observe(&g), Light::Red); // one green frame: still red
        assert_eq!(s.observe(&r), Light::Red);
        for _ in 0..2 {
            s.observe(&g);
        }
        assert_eq!(s.observe(&g), Light::Green);
    }

    #[test]
    fn parses_controller_payloads() {
        assert_eq!(Light::parse(b"RED\n"), Some(Light::Red));
        assert_eq!(
            Light::parse(br#"{"state": "green", "phase": 2}"#),
            Some(Light::Green)
        );
        assert_eq!(Light::parse(b"amber"), Some(Light::Yellow));
        assert_eq!(Light::parse(b"purple"), None);
    }
}
