//! Load shedding in front of a decoder: when it falls behind, whole GOPs are
//! dropped (never a partial one, which would decode to garbage) until the
//! backlog is down to half and a keyframe arrives.

/// Bytes allowed in front of the decoder before whole GOPs are dropped.
pub const BACKLOG_BYTES: u64 = 8 * 1024 * 1024;
/// Seconds of video waiting in front of a decoder before whole GOPs are
/// dropped (and, below half of it, resumed at the next keyframe): a box that
/// cannot decode everything sheds load instead of queueing it.
pub const BACKLOG_SECS: f64 = 2.0;

/// What to do with one access unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Feed it to the decoder.
    Decode,
    /// Drop it: the decoder is behind (counted as `skipped_backlog`).
    Shed,
    /// Drop it and log once: the decoder has just fallen behind.
    StartShedding,
}

/// Decides per access unit whether the decoder gets it.
#[derive(Debug, Default)]
pub struct GopShedder {
    dropping: bool,
}

impl GopShedder {
    /// `backlog` bytes and `behind` seconds wait in front of the decoder.
    pub fn admit(&mut self, keyframe: bool, backlog: u64, behind: f64) -> Admit {
        let mut started = false;
        if !self.dropping && (backlog > BACKLOG_BYTES || behind > BACKLOG_SECS) {
            self.dropping = true;
            started = true;
        }
        if !self.dropping {
            return Admit::Decode;
        }
        if keyframe && backlog < BACKLOG_BYTES / 2 && behind < BACKLOG_SECS / 2.0 {
            self.dropping = false;
            return Admit::Decode;
        }
        if started {
            Admit::StartShedding
        } else {
            Admit::Shed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sheds_whole_gops_and_resumes_on_a_keyframe() {
        let mut s = GopShedder::default();
        assert_eq!(s.admit(true, 0, 0.0), Admit::Decode);
        assert_eq!(s.admit(false, 0, 2.5), Admit::StartShedding);
        // Still behind, or caught up but mid-GOP: keep dropping.
        assert_eq!(s.admit(false, 0, 1.5), Admit::Shed);
        assert_eq!(s.admit(false, 0, 0.1), Admit::Shed);
        assert_eq!(s.admit(true, 0, 1.5), Admit::Shed);
        // A keyframe with the backlog below half: decode again.
        assert_eq!(s.admit(true, 0, 0.5), Admit::Decode);
        assert_eq!(s.admit(false, 0, 0.5), Admit::Decode);
        assert_eq!(s.admit(false, BACKLOG_BYTES + 1, 0.0), Admit::StartShedding);
    }
}
