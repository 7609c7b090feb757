//! The evidence index: one row per sealed evidence folder, with its size, the
//! officer's review and a hold flag. Retention deletes the oldest folders that
//! are not held.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Store, StoreError};

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS evidence (
    event_id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule TEXT NOT NULL,
    time TEXT NOT NULL,
    severity TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    held INTEGER NOT NULL DEFAULT 0,
    plate_text TEXT,
    plate_confidence REAL,
    plate_valid INTEGER,
    review_status TEXT,
    review_note TEXT,
    review_at TEXT,
    files TEXT NOT NULL,
    objects TEXT NOT NULL,
    review_by TEXT,
    place TEXT,
    measured TEXT
);
CREATE INDEX IF NOT EXISTS evidence_time ON evidence (time);";

/// A row of the index.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvidenceRow {
    pub event_id: String,
    pub camera: String,
    pub kind: String,
    pub rule: String,
    pub time: String,
    pub severity: String,
    pub bytes: u64,
    pub held: bool,
    pub plate: Option<PlateRow>,
    pub review: Option<Review>,
    /// File names present in the folder.
    pub files: Vec<String>,
    /// JSON array of the alert's objects.
    pub objects: serde_json::Value,
    /// The alert's `place` (JSON object), null when the camera has none.
    pub place: serde_json::Value,
    /// What the rule measured (speed, signal, dwell, count, lane, zone,
    /// line, direction, confidence): a JSON object, empty for indexes made
    /// before it was kept.
    pub measured: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PlateRow {
    pub text: String,
    pub confidence: f32,
    pub valid: bool,
}

/// The latest review of an event (the whole signed history is in the
/// folder's `review-NNN.json` records).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Review {
    pub status: String,
    pub note: String,
    pub at: String,
    /// Who decided (`[[http.users]] name`); empty for reviews made before
    /// reviews were attributed.
    pub reviewer: String,
}

/// Adds the columns newer versions keep to an index made by an older one.
pub(super) fn migrate(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('evidence') WHERE name = 'review_by'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        conn.execute("ALTER TABLE evidence ADD COLUMN review_by TEXT", [])?;
    }
    for col in ["place", "measured"] {
        let has: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('evidence') WHERE name = ?1",
            [col],
            |r| r.get(0),
        )?;
        if has == 0 {
            conn.execute(&format!("ALTER TABLE evidence ADD COLUMN {col} TEXT"), [])?;
        }
    }
    Ok(())
}

/// Filters of the review list.
#[derive(Debug, Default, Clone)]
pub struct EvidenceQuery {
    pub camera: Option<String>,
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    /// `pending` (no review yet), `confirmed` or `rejected`.
    pub status: Option<String>,
    /// Text the camera's place (name, address, units) contains.
    pub place: Option<String>,
    pub limit: usize,
}

fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<EvidenceRow> {
    let plate_text: Option<String> = r.get(8)?;
    let review_status: Option<String> = r.get(11)?;
    let files: String = r.get(14)?;
    let objects: String = r.get(15)?;
    Ok(EvidenceRow {
        event_id: r.get(0)?,
        camera: r.get(1)?,
        kind: r.get(2)?,
        rule: r.get(3)?,
        time: r.get(4)?,
        severity: r.get(5)?,
        bytes: r.get::<_, i64>(6)? as u64,
        held: r.get::<_, i64>(7)? != 0,
        plate: match plate_text {
            Some(text) => Some(PlateRow {
                text,
                confidence: r.get::<_, Option<f64>>(9)?.unwrap_or(0.0) as f32,
                valid: r.get::<_, Option<i64>>(10)?.unwrap_or(0) != 0,
            }),
            None => None,
        },
        review: match review_status {
            Some(status) => Some(Review {
                status,
                note: r.get::<_, Option<String>>(12)?.unwrap_or_default(),
                at: r.get::<_, Option<String>>(13)?.unwrap_or_default(),
                reviewer: r.get::<_, Option<String>>(16)?.unwrap_or_default(),
            }),
            None => None,
        },
        files: serde_json::from_str(&files).unwrap_or_default(),
        objects: serde_json::from_str(&objects).unwrap_or(serde_json::Value::Null),
        place: json_column(r.get(17)?, serde_json::Value::Null),
        measured: json_column(r.get(18)?, serde_json::json!({})),
    })
}

/// A JSON text column; `empty` when NULL (an older row) or unreadable.
fn json_column(text: Option<String>, empty: serde_json::Value) -> serde_json::Value {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(empty)
}

const COLUMNS: &str = "event_id, camera, kind, rule, time, severity, bytes, held, plate_text, plate_confidence, plate_valid, review_status, review_note, review_at, files, objects, review_by, place, measured";

impl Store {
    /// Adds (or replaces) a sealed folder in the index.
    pub fn evidence_insert(&self, e: &EvidenceRow) -> Result<(), StoreError> {
        let g = self.lock();
        g.conn.execute(
            &format!("INSERT OR REPLACE INTO evidence ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)"),
            params![
                e.event_id, e.camera, e.kind, e.rule, e.time, e.severity, e.bytes as i64, e.held as i64,
                e.plate.as_ref().map(|p| p.text.clone()),
                e.plate.as_ref().map(|p| p.confidence as f64),
                e.plate.as_ref().map(|p| p.valid as i64),
                e.review.as_ref().map(|r| r.status.clone()),
                e.review.as_ref().map(|r| r.note.clone()),
                e.review.as_ref().map(|r| r.at.clone()),
                serde_json::to_string(&e.files).unwrap_or_else(|_| "[]".into()),
                e.objects.to_string(),
                e.review.as_ref().map(|r| r.reviewer.clone()),
                (!e.place.is_null()).then(|| e.place.to_string()),
                e.measured.to_string(),
            ],
        )?;
        Ok(())
    }

    pub fn evidence_get(&self, id: &str) -> Result<Option<EvidenceRow>, StoreError> {
        let g = self.lock();
        Ok(g.conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM evidence WHERE event_id = ?1"),
                [id],
                row_of,
            )
            .optional()?)
    }

    /// Newest first.
    pub fn evidence_list(&self, q: &EvidenceQuery) -> Result<Vec<EvidenceRow>, StoreError> {
        let g = self.lock();
        let mut st = g.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM evidence
             WHERE (?1 IS NULL OR camera = ?1) AND (?2 IS NULL OR kind = ?2)
               AND (?3 IS NULL OR time >= ?3) AND (?4 IS NULL OR time <= ?4)
               AND (?6 IS NULL OR COALESCE(review_status, 'pending') = ?6)
               AND (?7 IS NULL OR instr(lower(COALESCE(place, '')), lower(?7)) > 0)
             ORDER BY time DESC, event_id DESC LIMIT ?5"
        ))?;
        let limit = if q.limit == 0 { 200 } else { q.limit.min(5000) };
        let rows = st
            .query_map(
                params![
                    q.camera,
                    q.kind,
                    q.since,
                    q.until,
                    limit as i64,
                    q.status,
                    q.place
                ],
                row_of,
            )?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Records an officer's latest decision and whether the event is now
    /// held (kept by retention). False if the event is unknown.
    pub fn evidence_review(
        &self,
        id: &str,
        review: &Review,
        held: bool,
    ) -> Result<bool, StoreError> {
        let g = self.lock();
        let n = g.conn.execute(
            "UPDATE evidence SET review_status = ?2, review_note = ?3, review_at = ?4, held = ?5, review_by = ?6 WHERE event_id = ?1",
            params![id, review.status, review.note, review.at, held as i64, review.reviewer],
        )?;
        Ok(n > 0)
    }

    /// Marks an event held (kept whatever the budget) or releases it.
    pub fn evidence_hold(&self, id: &str, held: bool) -> Result<bool, StoreError> {
        let g = self.lock();
        let n = g.conn.execute(
            "UPDATE evidence SET held = ?2 WHERE event_id = ?1",
            params![id, held as i64],
        )?;
        Ok(n > 0)
    }

    /// Total bytes of indexed evidence, and of held evidence.
    pub fn evidence_bytes(&self) -> Result<(u64, u64), StoreError> {
        let g = self.lock();
        let (all, held): (i64, i64) = g.conn.query_row(
            "SELECT COALESCE(SUM(bytes), 0), COALESCE(SUM(CASE WHEN held != 0 THEN bytes ELSE 0 END), 0) FROM evidence",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((all as u64, held as u64))
    }

    /// The oldest folder that is not held.
    pub fn evidence_oldest_unheld(&self) -> Result<Option<(String, u64)>, StoreError> {
        let g = self.lock();
        Ok(g.conn
            .query_row(
                "SELECT event_id, bytes FROM evidence WHERE held = 0 ORDER BY time ASC, event_id ASC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()?)
    }

    pub fn evidence_remove(&self, id: &str) -> Result<(), StoreError> {
        let g = self.lock();
        g.conn
            .execute("DELETE FROM evidence WHERE event_id = ?1", [id])?;
        Ok(())
    }
}
