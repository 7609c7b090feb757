//! Embedded SQLite store (WAL): the durable outbox and the evidence index
//! (`evidence.rs`). The outbox: an alert
//! and its thumbnail are committed here before anything is published, and a
//! row is deleted only when the broker has acknowledged every packet of it.
//!
//! Bounded by rows and bytes. When a new alert would exceed a bound, the
//! oldest row of the lowest severity goes first (it may be the new one if
//! everything else is more severe); every drop is counted and logged.

pub mod evidence;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// Rows kept in the quarantine table (the newest).
pub const QUARANTINE_ROWS: i64 = 1000;

/// How much an alert matters when the outbox must drop something.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Normal,
    High,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Normal => "normal",
            Severity::High => "high",
        }
    }
    fn rank(self) -> i64 {
        match self {
            Severity::Low => 0,
            Severity::Normal => 1,
            Severity::High => 2,
        }
    }
    fn from_rank(r: i64) -> Severity {
        match r {
            0 => Severity::Low,
            2 => Severity::High,
            _ => Severity::Normal,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the agent database {path}: {err} — check data_dir and its permissions and free space"
    )]
    Open { path: PathBuf, err: String },
    #[error("agent database: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A new outbox entry: one alert and, optionally, its thumbnail.
#[derive(Debug, Clone)]
pub struct NewRow {
    pub camera: String,
    pub event_id: String,
    pub severity: Severity,
    pub topic: String,
    pub payload: Vec<u8>,
    pub thumb_topic: Option<String>,
    pub thumb: Option<Vec<u8>>,
}

/// A stored outbox entry.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: i64,
    pub camera: String,
    pub event_id: String,
    pub severity: Severity,
    pub topic: String,
    pub payload: Vec<u8>,
    pub thumb_topic: Option<String>,
    pub thumb: Option<Vec<u8>>,
}

/// A row dropped to keep the outbox within its bounds.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub event_id: String,
    pub camera: String,
    pub severity: Severity,
    /// An event update (evidence sealed, review), not an alert.
    pub update: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: u64,
    pub max_bytes: u64,
}

/// The connection and the outbox's running totals (rows, bytes), so the
/// bound check never scans the table.
struct Inner {
    conn: Connection,
    rows: u64,
    bytes: u64,
}

pub struct Store {
    conn: Mutex<Inner>,
    limits: Limits,
    pub dropped: AtomicU64,
    pub path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) `<dir>/agent.db`.
    pub fn open(dir: &Path, limits: Limits) -> Result<Store, StoreError> {
        let path = dir.join("agent.db");
        let open_err = |e: String| StoreError::Open {
            path: path.clone(),
            err: e,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let conn = Connection::open(&path).map_err(|e| open_err(e.to_string()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| open_err(e.to_string()))?;
        // FULL: a committed alert survives a power cut.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                camera TEXT NOT NULL,
                event_id TEXT NOT NULL,
                severity INTEGER NOT NULL,
                topic TEXT NOT NULL,
                payload BLOB NOT NULL,
                thumb_topic TEXT,
                thumb BLOB,
                bytes INTEGER NOT NULL,
                created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
            );
            CREATE INDEX IF NOT EXISTS outbox_drop ON outbox (severity, id);
            CREATE TABLE IF NOT EXISTS quarantine (
                id INTEGER PRIMARY KEY,
                camera TEXT NOT NULL,
                event_id TEXT NOT NULL,
                severity INTEGER NOT NULL,
                topic TEXT NOT NULL,
                payload BLOB NOT NULL,
                thumb_topic TEXT,
                thumb BLOB,
                bytes INTEGER NOT NULL,
                created_at TEXT NOT NULL,
                reason TEXT NOT NULL,
                quarantined_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
            );",
        )?;
        conn.execute_batch(evidence::SCHEMA)?;
        evidence::migrate(&conn)?;
        let (rows, bytes): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM outbox",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok(Store {
            conn: Mutex::new(Inner {
                conn,
                rows: rows as u64,
                bytes: bytes as u64,
            }),
            limits,
            dropped: AtomicU64::new(0),
            path,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.conn.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// Commits a row, then drops rows by policy while over a bound. Returns the
    /// new row's id (None if it was itself dropped) and what was dropped.
    pub fn enqueue(&self, row: &NewRow) -> Result<(Option<i64>, Vec<Dropped>), StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        // A committed alert must survive a power cut: fsync this commit.
        inner.conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = inner.conn.transaction()?;
        let bytes = (row.payload.len() + row.thumb.as_ref().map_or(0, |t| t.len())) as i64;
        tx.execute(
            "INSERT INTO outbox (camera, event_id, severity, topic, payload, thumb_topic, thumb, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![row.camera, row.event_id, row.severity.rank(), row.topic, row.payload, row.thumb_topic, row.thumb, bytes],
        )?;
        let mut id = Some(tx.last_insert_rowid());
        let (mut n, mut b) = (inner.rows + 1, inner.bytes + bytes as u64);
        let mut dropped = Vec::new();
        while n > self.limits.max_rows || b > self.limits.max_bytes {
            let victim: Option<(i64, String, String, i64, i64, bool)> = tx
                .query_row(
                    "SELECT id, event_id, camera, severity, bytes, instr(payload, CAST('ioc.event_update/' AS BLOB)) > 0 FROM outbox ORDER BY severity ASC, id ASC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            let Some((vid, event_id, camera, sev, vbytes, update)) = victim else {
                break;
            };
            tx.execute("DELETE FROM outbox WHERE id = ?1", [vid])?;
            n -= 1;
            b = b.saturating_sub(vbytes as u64);
            if Some(vid) == id {
                id = None;
            }
            dropped.push(Dropped {
                event_id,
                camera,
                severity: Severity::from_rank(sev),
                update,
            });
        }
        tx.commit()?;
        (inner.rows, inner.bytes) = (n, b);
        self.dropped
            .fetch_add(dropped.len() as u64, Ordering::Relaxed);
        Ok((id, dropped))
    }

    /// Up to `limit` rows with id greater than `after`, oldest first.
    pub fn after(&self, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
        let guard = self.lock();
        let mut st = guard.conn.prepare_cached(
            "SELECT id, camera, event_id, severity, topic, payload, thumb_topic, thumb FROM outbox WHERE id > ?1 ORDER BY id ASC LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![after, limit as i64], |r| {
                Ok(Row {
                    id: r.get(0)?,
                    camera: r.get(1)?,
                    event_id: r.get(2)?,
                    severity: Severity::from_rank(r.get(3)?),
                    topic: r.get(4)?,
                    payload: r.get(5)?,
                    thumb_topic: r.get(6)?,
                    thumb: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Removes acknowledged rows, in one transaction. Not fsynced (WAL with
    /// synchronous=NORMAL): a delete lost in a power cut only means the alert
    /// is sent again, which the IOC de-duplicates.
    pub fn delete(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.conn.pragma_update(None, "synchronous", "NORMAL")?;
        let tx = inner.conn.transaction()?;
        let (mut n, mut b) = (0u64, 0u64);
        {
            let mut st = tx.prepare_cached("DELETE FROM outbox WHERE id = ?1 RETURNING bytes")?;
            for id in ids {
                if let Some(bytes) = st.query_row([id], |r| r.get::<_, i64>(0)).optional()? {
                    n += 1;
                    b += bytes as u64;
                }
            }
        }
        tx.commit()?;
        inner.rows = inner.rows.saturating_sub(n);
        inner.bytes = inner.bytes.saturating_sub(b);
        Ok(())
    }

    /// Moves a row that cannot be delivered out of the outbox into
    /// `quarantine` (kept for inspection, with the reason), so the rows
    /// after it flow. The quarantine keeps its newest `QUARANTINE_ROWS`.
    /// Returns false when the row was no longer in the outbox.
    pub fn quarantine(&self, id: i64, reason: &str) -> Result<bool, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = inner.conn.transaction()?;
        let moved = tx.execute(
            "INSERT OR REPLACE INTO quarantine (id, camera, event_id, severity, topic, payload, thumb_topic, thumb, bytes, created_at, reason)
             SELECT id, camera, event_id, severity, topic, payload, thumb_topic, thumb, bytes, created_at, ?2 FROM outbox WHERE id = ?1",
            params![id, reason],
        )?;
        let bytes: Option<i64> = tx
            .query_row(
                "DELETE FROM outbox WHERE id = ?1 RETURNING bytes",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "DELETE FROM quarantine WHERE id NOT IN (SELECT id FROM quarantine ORDER BY id DESC LIMIT ?1)",
            [QUARANTINE_ROWS],
        )?;
        tx.commit()?;
        if let Some(b) = bytes {
            inner.rows = inner.rows.saturating_sub(1);
            inner.bytes = inner.bytes.saturating_sub(b as u64);
        }
        Ok(moved > 0)
    }

    /// Rows in quarantine.
    pub fn quarantined(&self) -> Result<u64, StoreError> {
        let g = self.lock();
        let n: i64 = g
            .conn
            .query_row("SELECT COUNT(*) FROM quarantine", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// (rows, bytes) waiting.
    pub fn depth(&self) -> Result<(u64, u64), StoreError> {
        let g = self.lock();
        Ok((g.rows, g.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarantined_row_leaves_the_outbox_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let lim = Limits {
            max_rows: 100,
            max_bytes: 1 << 30,
        };
        let s = Store::open(dir.path(), lim).unwrap();
        let a = s.enqueue(&row(1, Severity::Normal, 10)).unwrap().0.unwrap();
        let b = s.enqueue(&row(2, Severity::Normal, 10)).unwrap().0.unwrap();
        assert!(s.quarantine(a, "too large").unwrap());
        assert!(!s.quarantine(a, "again").unwrap(), "already gone");
        let left: Vec<i64> = s.after(0, 10).unwrap().iter().map(|r| r.id).collect();
        assert_eq!(left, vec![b]);
        assert_eq!(s.depth().unwrap().0, 1);
        assert_eq!(s.quarantined().unwrap(), 1);
        // Survives a reopen.
        drop(s);
        let s = Store::open(dir.path(), lim).unwrap();
        assert_eq!(s.quarantined().unwrap(), 1);
        assert_eq!(s.depth().unwrap().0, 1);
    }

    fn row(i: usize, sev: Severity, size: usize) -> NewRow {
        NewRow {
            camera: "c".into(),
            event_id: format!("e{i}"),
            severity: sev,
            topic: "t".into(),
            payload: vec![b'x'; size],
            thumb_topic: Some("t/thumb".into()),
            thumb: Some(vec![0; size]),
        }
    }

    #[test]
    fn rows_survive_reopen_and_come_back_in_order() {
        let d = tempfile::tempdir().unwrap();
        let lim = Limits {
            max_rows: 100,
            max_bytes: 1 << 30,
        };
        {
            let s = Store::open(d.path(), lim).unwrap();
            for i in 0..5 {
                s.enqueue(&row(i, Severity::Normal, 10)).unwrap();
            }
            let first = s.after(0, 2).unwrap();
            s.delete(&[first[0].id]).unwrap();
        }
        let s = Store::open(d.path(), lim).unwrap();
        let rows = s.after(0, 100).unwrap();
        let ids: Vec<_> = rows.iter().map(|r| r.event_id.as_str()).collect();
        assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
        assert_eq!(rows[0].thumb.as_deref(), Some(&[0u8; 10][..]));
        assert_eq!(s.depth().unwrap(), (4, 80));
    }

    #[test]
    fn full_outbox_drops_oldest_lowest_severity_first() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(
            d.path(),
            Limits {
                max_rows: 3,
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
        s.enqueue(&row(0, Severity::High, 1)).unwrap();
        s.enqueue(&row(1, Severity::Low, 1)).unwrap();
        s.enqueue(&row(2, Severity::Normal, 1)).unwrap();
        let (_, d1) = s.enqueue(&row(3, Severity::Low, 1)).unwrap();
        assert_eq!(d1.len(), 1);
        assert_eq!(d1[0].event_id, "e1"); // oldest of the lowest severity
        let (_, d2) = s.enqueue(&row(4, Severity::High, 1)).unwrap();
        assert_eq!(d2[0].event_id, "e3");
        let (_, d3) = s.enqueue(&row(5, Severity::High, 1)).unwrap();
        assert_eq!(d3[0].event_id, "e2"); // then normal
        // A low row arriving when all others are high is itself dropped.
        let (id, d4) = s.enqueue(&row(6, Severity::Low, 1)).unwrap();
        assert_eq!((id, d4[0].event_id.as_str()), (None, "e6"));
        assert_eq!(s.dropped.load(Ordering::Relaxed), 4);
        let left: Vec<_> = s
            .after(0, 10)
            .unwrap()
            .into_iter()
            .map(|r| r.event_id)
            .collect();
        assert_eq!(left, ["e0", "e4", "e5"]);
    }

    #[test]
    fn dropped_updates_are_told_apart_from_alerts() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(
            d.path(),
            Limits {
                max_rows: 1,
                max_bytes: 1 << 30,
            },
        )
        .unwrap();
        let mut u = row(0, Severity::Low, 1);
        u.payload = br#"{"schema":"ioc.event_update/1"}"#.to_vec();
        s.enqueue(&u).unwrap();
        let (_, d1) = s.enqueue(&row(1, Severity::Low, 1)).unwrap();
        assert!(d1[0].update);
        let (_, d2) = s.enqueue(&row(2, Severity::Low, 1)).unwrap();
        assert!(!d2[0].update);
    }

    #[test]
    fn byte_bound_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(
            d.path(),
            Limits {
                max_rows: 100,
                max_bytes: 100,
            },
        )
        .unwrap();
        for i in 0..10 {
            s.enqueue(&row(i, Severity::Normal, 20)).unwrap();
        }
        let (n, b) = s.depth().unwrap();
        assert!(b <= 100 && n == 2, "{n} rows {b} bytes");
    }
}
