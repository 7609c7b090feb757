//! Every rule kind: one row of [`KINDS`] (its names, event type, defaults
//! and the geometry it needs) and one file here with its state and judgement
//! (a [`Judge`]).
//!
//! A new kind is: a variant of [`RuleKind`] (rules/config.rs; its doc comment
//! is the user's documentation), its row in [`KINDS`] at the same position, a
//! file here whose `judge()` makes its state, and a scenario in
//! tests/scenarios/.

mod crowd;
mod dwell;
mod frame_cascade;
mod lane_class;
mod line_cross;
mod no_helmet;
mod overload;
mod red_light;
mod sidewalk;
mod speeding;
mod stop_line;
mod wrong_way;
mod zone_enter;
mod zone_exit;

use std::fmt;

use super::EndReason;
use super::common::FrameCtx;
use super::config::{CropRegion, Needs, RuleKind};
use super::{CascadeRequest, Firing, Rule};
use crate::store::Severity;
use crate::track::Track;

/// A rule's state and judgement. The engine sets `rule` in the firings and
/// requests it returns.
pub(crate) trait Judge: fmt::Debug + Send {
    /// Judges one frame.
    fn evaluate(&mut self, rule: &Rule, ctx: &FrameCtx) -> Vec<Firing>;

    /// The cascade runs this rule wants for the frame (`size`: width and
    /// height in pixels; `t`: stream time).
    fn cascade_requests(
        &mut self,
        _rule: &Rule,
        _tracks: &[Track],
        _size: [f64; 2],
        _t: f64,
    ) -> Vec<CascadeRequest> {
        Vec::new()
    }

    /// The result of one of its cascade runs: the best `confidence` of the
    /// rule's labels, `positive` when it reaches the rule's `min_confidence`.
    fn cascade_result(&mut self, _track: Option<u64>, _confidence: f32, _positive: bool) {}

    /// Whether a zone-level event (start without end) is open.
    fn is_open(&self) -> bool {
        false
    }

    /// Ends an open zone-level event for `reason` and resets, so that the
    /// same event starts afresh; the `end` firing, if one was open.
    fn end_open(&mut self, _reason: EndReason) -> Option<Firing> {
        None
    }
}

/// What is fixed about a kind of rule.
#[derive(Debug)]
pub struct KindInfo {
    pub kind: RuleKind,
    /// The `kind` in the config.
    pub name: &'static str,
    /// The alert's `type` (MQTT contract).
    pub event_type: &'static str,
    /// Display names for operators.
    pub en: &'static str,
    pub vi: &'static str,
    /// Severity unless the rule sets one.
    pub severity: Severity,
    /// The geometry a rule of this kind refers to.
    pub needs: Needs,
    /// Defaults of `min_secs` and `dwell_secs`.
    pub min_secs: f64,
    pub dwell_secs: f64,
    /// Classes judged when the rule names none (empty: every class).
    pub classes: &'static [&'static str],
    /// Cascade kinds (a second `model` decides): the default crop region.
    pub cascade: Option<CropRegion>,
    /// Makes a rule's fresh state.
    pub(crate) judge: fn() -> Box<dyn Judge>,
}

const VEHICLES: &[&str] = &["car", "motorcycle", "bus", "truck", "bicycle"];

/// One row per kind, in the order of [`RuleKind`]'s variants (checked when
/// compiling).
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        kind: RuleKind::ZoneEnter,
        name: "zone_enter",
        event_type: "object.zone_enter",
        en: "Object entered zone",
        vi: "Người, phương tiện vào khu vực",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: zone_enter::judge,
    },
    KindInfo {
        kind: RuleKind::LineCross,
        name: "line_cross",
        event_type: "object.line_cross",
        en: "Object crossed line",
        vi: "Người, phương tiện đi qua vạch",
        severity: Severity::Normal,
        needs: Needs::Line,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: line_cross::judge,
    },
    KindInfo {
        kind: RuleKind::WrongWay,
        name: "wrong_way",
        event_type: "traffic.wrong_way",
        en: "Wrong-way driving",
        vi: "Đi ngược chiều",
        severity: Severity::Normal,
        needs: Needs::Lane,
        min_secs: 1.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: wrong_way::judge,
    },
    KindInfo {
        kind: RuleKind::LaneLine,
        name: "lane_line",
        event_type: "traffic.lane_line",
        en: "Crossing a lane line",
        vi: "Lấn làn, đè vạch",
        severity: Severity::Normal,
        needs: Needs::Line,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: line_cross::judge,
    },
    KindInfo {
        kind: RuleKind::LaneClass,
        name: "lane_class",
        event_type: "traffic.lane_class",
        en: "Wrong lane for vehicle type",
        vi: "Đi sai làn đường quy định",
        severity: Severity::Normal,
        needs: Needs::Lane,
        min_secs: 1.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: lane_class::judge,
    },
    KindInfo {
        kind: RuleKind::IllegalStop,
        name: "illegal_stop",
        event_type: "traffic.illegal_stop",
        en: "Illegal stopping",
        vi: "Dừng xe sai quy định",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 0.0,
        dwell_secs: 30.0,
        classes: VEHICLES,
        cascade: None,
        judge: dwell::standing,
    },
    KindInfo {
        kind: RuleKind::IllegalParking,
        name: "illegal_parking",
        event_type: "traffic.illegal_parking",
        en: "Illegal parking",
        vi: "Đỗ xe sai quy định",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 0.0,
        dwell_secs: 300.0,
        classes: VEHICLES,
        cascade: None,
        judge: dwell::standing,
    },
    KindInfo {
        kind: RuleKind::Sidewalk,
        name: "sidewalk",
        event_type: "traffic.sidewalk",
        en: "Riding on the sidewalk",
        vi: "Đi trên vỉa hè",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 1.0,
        dwell_secs: 0.0,
        classes: VEHICLES,
        cascade: None,
        judge: sidewalk::judge,
    },
    KindInfo {
        kind: RuleKind::Speeding,
        name: "speeding",
        event_type: "traffic.speeding",
        en: "Speeding",
        vi: "Chạy quá tốc độ",
        severity: Severity::Normal,
        needs: Needs::Nothing,
        min_secs: 1.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: speeding::judge,
    },
    KindInfo {
        kind: RuleKind::Overload,
        name: "overload",
        event_type: "traffic.overload",
        en: "Too many riders",
        vi: "Chở quá số người quy định",
        severity: Severity::Normal,
        needs: Needs::Nothing,
        min_secs: 1.0,
        dwell_secs: 0.0,
        classes: &["motorcycle"],
        cascade: None,
        judge: overload::judge,
    },
    KindInfo {
        kind: RuleKind::Crowd,
        name: "crowd",
        event_type: "order.crowd",
        en: "Crowd gathering",
        vi: "Tụ tập đông người",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 5.0,
        dwell_secs: 0.0,
        classes: &["person"],
        cascade: None,
        judge: crowd::judge,
    },
    KindInfo {
        kind: RuleKind::Loitering,
        name: "loitering",
        event_type: "order.loitering",
        en: "Loitering",
        vi: "Lảng vảng, lưu lại lâu bất thường",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 0.0,
        dwell_secs: 60.0,
        classes: &["person"],
        cascade: None,
        judge: dwell::loitering,
    },
    KindInfo {
        kind: RuleKind::Intrusion,
        name: "intrusion",
        event_type: "order.intrusion",
        en: "Intrusion into a restricted area",
        vi: "Xâm nhập khu vực cấm",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: zone_enter::judge,
    },
    KindInfo {
        kind: RuleKind::RedLight,
        name: "red_light",
        event_type: "traffic.red_light",
        en: "Running a red light",
        vi: "Vượt đèn đỏ",
        severity: Severity::Normal,
        needs: Needs::Line,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: VEHICLES,
        cascade: None,
        judge: red_light::judge,
    },
    KindInfo {
        kind: RuleKind::StopLine,
        name: "stop_line",
        event_type: "traffic.stop_line",
        en: "Stopping on the stop line at red",
        vi: "Dừng xe đè vạch dừng khi đèn đỏ",
        severity: Severity::Normal,
        needs: Needs::Line,
        min_secs: 2.0,
        dwell_secs: 0.0,
        classes: VEHICLES,
        cascade: None,
        judge: stop_line::judge,
    },
    KindInfo {
        kind: RuleKind::NoHelmet,
        name: "no_helmet",
        event_type: "traffic.no_helmet",
        en: "Riding without a helmet",
        vi: "Không đội mũ bảo hiểm",
        severity: Severity::Normal,
        needs: Needs::Nothing,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &["motorcycle"],
        cascade: Some(CropRegion::UpperHalf),
        judge: no_helmet::judge,
    },
    KindInfo {
        kind: RuleKind::FireSmoke,
        name: "fire_smoke",
        event_type: "order.fire_smoke",
        en: "Fire or smoke",
        vi: "Cháy, khói",
        severity: Severity::Normal,
        needs: Needs::Nothing,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: Some(CropRegion::Box),
        judge: frame_cascade::judge,
    },
    KindInfo {
        kind: RuleKind::Fight,
        name: "fight",
        event_type: "order.fight",
        en: "Fight",
        vi: "Đánh nhau, gây rối",
        severity: Severity::Normal,
        needs: Needs::Nothing,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: Some(CropRegion::Box),
        judge: frame_cascade::judge,
    },
    KindInfo {
        kind: RuleKind::ZoneExit,
        name: "zone_exit",
        event_type: "object.zone_exit",
        en: "Object left zone",
        vi: "Người, phương tiện rời khu vực",
        severity: Severity::Normal,
        needs: Needs::Zone,
        min_secs: 0.0,
        dwell_secs: 0.0,
        classes: &[],
        cascade: None,
        judge: zone_exit::judge,
    },
];

const _: () = {
    let mut i = 0;
    while i < KINDS.len() {
        assert!(
            KINDS[i].kind as usize == i,
            "KINDS must follow the order of RuleKind"
        );
        i += 1;
    }
};

impl RuleKind {
    /// This kind's row of [`KINDS`].
    pub fn info(self) -> &'static KindInfo {
        &KINDS[self as usize]
    }

    /// The alert's `type`, e.g. `traffic.red_light`.
    pub fn event_type(self) -> &'static str {
        self.info().event_type
    }

    /// The `kind` as written in the config, e.g. `red_light`.
    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    /// Display names for operators: (English, Vietnamese).
    pub fn display_names(self) -> (&'static str, &'static str) {
        (self.info().en, self.info().vi)
    }

    /// Which geometry the rule needs.
    pub fn needs(self) -> Needs {
        self.info().needs
    }

    /// Whether a second model decides (`model` and `labels` are required).
    pub fn is_cascade(self) -> bool {
        self.info().cascade.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `kind` name serde accepts, read from its "expected one of" list.
    fn config_names() -> Vec<String> {
        #[derive(serde::Deserialize, Debug)]
        struct K {
            #[allow(dead_code)]
            kind: RuleKind,
        }
        let err = toml::from_str::<K>("kind = \"?\"").unwrap_err().to_string();
        let list = err.split("expected one of").nth(1).unwrap_or_default();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_kind_has_a_consistent_row() {
        #[derive(serde::Deserialize)]
        struct K {
            kind: RuleKind,
        }
        let names = config_names();
        assert!(names.len() >= 18, "{names:?}");
        // A variant without a row (or a row too many).
        assert_eq!(names.len(), KINDS.len(), "{names:?}");
        let mut types = std::collections::HashSet::new();
        for n in &names {
            let k = toml::from_str::<K>(&format!("kind = \"{n}\""))
                .unwrap()
                .kind;
            let i = k.info();
            assert_eq!(i.kind, k);
            assert_eq!(i.name, n);
            assert_eq!(
                i.event_type.split_once('.').map(|(_, s)| s),
                Some(n.as_str())
            );
            assert!(types.insert(i.event_type), "{} twice", i.event_type);
            assert!(!i.en.is_empty() && !i.vi.is_empty(), "{n}");
            assert!(i.min_secs >= 0.0 && i.dwell_secs >= 0.0, "{n}");
        }
    }
}
