//! Who is asking, and may they: users with roles and tokens, and login
//! sessions.
//!
//! A user is named by `[[http.users]]` (or is `admin`, the single
//! `[http] token`, with every role). A program sends its token as
//! `Authorization: Bearer …`; a browser logs in once with it and then holds
//! only a random session id in an `HttpOnly; SameSite=Strict` cookie that
//! expires (`session_hours`) and ends at logout. The token itself is never
//! stored in the browser.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};

use crate::config::{HttpRole, Secret};

pub const SESSION_COOKIE: &str = "ioc_session";
/// Sessions kept at most; past it the one closest to expiry goes.
const MAX_SESSIONS: usize = 4096;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// List events and fetch evidence files.
    View,
    /// Confirm, reject or hold an event.
    Review,
    /// The installer's setup page and its API.
    Setup,
    /// `/metrics`.
    Metrics,
}

impl Need {
    fn what(self) -> &'static str {
        match self {
            Need::View => "view events and evidence (role viewer or reviewer)",
            Need::Review => "review or hold events (role reviewer)",
            Need::Setup => "use the setup page (role installer)",
            Need::Metrics => "read /metrics (role scraper)",
        }
    }
}

/// Whether `role` may do `need`.
pub fn may(role: HttpRole, need: Need) -> bool {
    matches!(
        (role, need),
        (HttpRole::Admin, _)
            | (HttpRole::Viewer, Need::View)
            | (HttpRole::Reviewer, Need::View | Need::Review)
            | (HttpRole::Installer, Need::Setup)
            | (HttpRole::Scraper, Need::Metrics)
    )
}

/// A logged-in user.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub name: String,
    pub role: HttpRole,
}

/// Why a request was refused.
#[derive(Debug, PartialEq)]
pub enum Refused {
    /// No credentials, or wrong ones: 401.
    Unknown,
    /// A known user whose role does not allow it: 403.
    Forbidden(String),
}

pub struct Users {
    users: Vec<(Principal, Secret)>,
    sessions: Mutex<HashMap<String, (Principal, Instant)>>,
    ttl: Duration,
}

impl Users {
    pub fn new(users: Vec<(String, HttpRole, Secret)>, ttl: Duration) -> Users {
        Users {
            users: users
                .into_iter()
                .map(|(name, role, t)| (Principal { name, role }, t))
                .collect(),
            sessions: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The user a token belongs to. Every token is compared in full, in
    /// constant time, so timing tells nothing of which one nearly matched.
    pub fn by_token(&self, presented: &str) -> Option<Principal> {
        let mut found = None;
        for (p, t) in &self.users {
            if token_ok(presented, t) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Principal, Instant)>> {
        match self.sessions.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Starts a session for `p`; returns its id (64 hex digits, random).
    pub fn login(&self, p: Principal, now: Instant) -> String {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        let id = hex::encode(bytes);
        let mut map = self.lock();
        map.retain(|_, (_, exp)| *exp > now);
        if map.len() >= MAX_SESSIONS
            && let Some(k) = map
                .iter()
                .min_by_key(|(_, (_, exp))| *exp)
                .map(|(k, _)| k.clone())
        {
            map.remove(&k);
        }
        map.insert(id.clone(), (p, now + self.ttl));
        id
    }

    pub fn logout(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    pub fn session(&self, id: &str, now: Instant) -> Option<Principal> {
        let mut map = self.lock();
        match map.get(id) {
            Some((p, exp)) if *exp > now => Some(p.clone()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Who sent this request: the bearer token, else the session cookie.
    pub fn who(&self, headers: &HeaderMap, now: Instant) -> Option<Principal> {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            && let Some(t) = v.strip_prefix("Bearer ")
        {
            return self.by_token(t.trim());
        }
        session_cookie(headers).and_then(|id| self.session(&id, now))
    }

    /// The user, if they may do `need`.
    pub fn require(
        &self,
        headers: &HeaderMap,
        need: Need,
        now: Instant,
    ) -> Result<Principal, Refused> {
        let p = self.who(headers, now).ok_or(Refused::Unknown)?;
        if may(p.role, need) {
            Ok(p)
        } else {
            Err(Refused::Forbidden(format!(
                "user '{}' (role {}) may not {}; log in as a user who may",
                p.name,
                p.role.as_str(),
                need.what()
            )))
        }
    }
}

/// The session id from the `ioc_session` cookie.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            kv.trim()
                .strip_prefix(&format!("{SESSION_COOKIE}="))
                .map(str::to_string)
        })
}

/// Constant-time comparison of the presented token with a configured one.
pub fn token_ok(presented: &str, want: &Secret) -> bool {
    let (a, b) = (presented.as_bytes(), want.0.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= (*x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0)) as usize;
    }
    diff == 0 && !b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn users() -> Users {
        Users::new(
            vec![
                (
                    "officer".into(),
                    HttpRole::Reviewer,
                    Secret("reviewer-token-0123".into()),
                ),
                (
                    "viewer".into(),
                    HttpRole::Viewer,
                    Secret("viewer-token-012345".into()),
                ),
                (
                    "fitter".into(),
                    HttpRole::Installer,
                    Secret("installer-token-0123".into()),
                ),
                (
                    "prom".into(),
                    HttpRole::Scraper,
                    Secret("scraper-token-012345".into()),
                ),
            ],
            Duration::from_secs(60),
        )
    }

    #[test]
    fn tokens_compare_exactly() {
        let want = Secret("0123456789abcdef".into());
        assert!(token_ok("0123456789abcdef", &want));
        assert!(!token_ok("0123456789abcdeF", &want));
        assert!(!token_ok("0123456789abcde", &want));
        assert!(!token_ok("", &want));
        assert!(!token_ok("x", &Secret(String::new())));
    }

    #[test]
    fn each_role_does_exactly_its_own_work() {
        use HttpRole::*;
        use Need::*;
        let table = [
            (Viewer, [true, false, false, false]),
            (Reviewer, [true, true, false, false]),
            (Installer, [false, false, true, false]),
            (Scraper, [false, false, false, true]),
            (Admin, [true, true, true, true]),
        ];
        for (role, want) in table {
            let got = [View, Review, Setup, Metrics].map(|n| may(role, n));
            assert_eq!(got, want, "{role:?}");
        }
        let u = users();
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer installer-token-0123"),
        );
        assert_eq!(
            u.require(&h, Setup, now).map(|p| p.name),
            Ok("fitter".into())
        );
        match u.require(&h, View, now) {
            Err(Refused::Forbidden(m)) => {
                assert!(m.contains("fitter") && m.contains("installer"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert_eq!(u.require(&h, View, now), Err(Refused::Unknown));
    }

    #[test]
    fn sessions_expire_and_end_at_logout() {
        let u = users();
        let t0 = Instant::now();
        let p = u.by_token("reviewer-token-0123").unwrap();
        let id = u.login(p.clone(), t0);
        assert_eq!(id.len(), 64);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {SESSION_COOKIE}={id}")).unwrap(),
        );
        assert_eq!(u.who(&h, t0 + Duration::from_secs(59)), Some(p.clone()));
        assert_eq!(u.who(&h, t0 + Duration::from_secs(61)), None, "expired");
        let id2 = u.login(p, t0);
        assert_ne!(id, id2);
        assert!(u.logout(&id2));
        assert_eq!(u.session(&id2, t0), None);
        // The token as a cookie is not a session.
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("ioc_session=reviewer-token-0123"),
        );
        assert_eq!(u.who(&h, t0), None);
    }
}
