//! `/evidence/<id>/clip.mp4` of a package whose clip is fragmented MP4:
//! the init segment and the media segments its signed manifest lists, in
//! order, as one file, with single byte ranges (a browser seeks with them).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::evidence::sign;

/// The parts of the clip in order, with their sizes; None when the
/// folder's manifest names no clip.
fn parts(dir: &Path) -> Option<Vec<(PathBuf, u64)>> {
    let text = std::fs::read(dir.join(sign::MANIFEST)).ok()?;
    let m: sign::Manifest = serde_json::from_slice(&text).ok()?;
    let c = m.clip?;
    std::iter::once(&c.init)
        .chain(&c.segments)
        .map(|n| {
            // Only names the manifest also lists as files, within the folder.
            let entry = m.files.iter().find(|f| &f.name == n)?;
            (!n.contains('/') && !n.starts_with('.')).then(|| (dir.join(n), entry.bytes))
        })
        .collect()
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` within `len`: (first, last).
fn range(headers: &HeaderMap, len: u64) -> Option<Result<(u64, u64), ()>> {
    let v = headers.get(header::RANGE)?.to_str().ok()?;
    let spec = v.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let r = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (a, "") => (a.parse().ok()?, len.saturating_sub(1)),
        (a, b) => (
            a.parse().ok()?,
            b.parse::<u64>().ok()?.min(len.saturating_sub(1)),
        ),
    };
    Some(if r.0 > r.1 || r.0 >= len {
        Err(())
    } else {
        Ok(r)
    })
}

fn read(parts: &[(PathBuf, u64)], first: u64, last: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity((last - first + 1) as usize);
    let mut at = 0u64;
    for (p, n) in parts {
        let (s, e) = (at, at + n);
        at = e;
        if e <= first || s > last {
            continue;
        }
        let from = first.max(s) - s;
        let to = (last + 1).min(e) - s;
        let mut f = std::fs::File::open(p)?;
        f.seek(SeekFrom::Start(from))?;
        let mut buf = vec![0; (to - from) as usize];
        f.read_exact(&mut buf)?;
        out.extend_from_slice(&buf);
    }
    Ok(out)
}

pub async fn serve(dir: &Path, headers: &HeaderMap) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such evidence file").into_response();
    let Some(parts) = parts(dir) else {
        return not_found();
    };
    let len: u64 = parts.iter().map(|(_, n)| n).sum();
    if len == 0 {
        return not_found();
    }
    let (status, first, last) = match range(headers, len) {
        None => (StatusCode::OK, 0, len - 1),
        Some(Ok((a, b))) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Err(())) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let body = match tokio::task::spawn_blocking(move || read(&parts, first, last)).await {
        Ok(Ok(b)) => b,
        _ => return not_found(),
    };
    let mut r = (status, Body::from(body)).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_across_parts() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::fs::write(&a, b"0123").unwrap();
        std::fs::write(&b, b"456789").unwrap();
        let parts = vec![(a, 4), (b, 6)];
        assert_eq!(read(&parts, 0, 9).unwrap(), b"0123456789");
        assert_eq!(read(&parts, 2, 5).unwrap(), b"2345");
        assert_eq!(read(&parts, 7, 9).unwrap(), b"789");
        let h = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            h
        };
        assert_eq!(range(&h("bytes=2-5"), 10), Some(Ok((2, 5))));
        assert_eq!(range(&h("bytes=7-"), 10), Some(Ok((7, 9))));
        assert_eq!(range(&h("bytes=-3"), 10), Some(Ok((7, 9))));
        assert_eq!(range(&h("bytes=12-"), 10), Some(Err(())));
        assert_eq!(range(&HeaderMap::new(), 10), None);
    }
}
