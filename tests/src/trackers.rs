//! A fake issue tracker on 127.0.0.1: records every request (method, path, headers, body,
//! and what it answered) and answers 201, or the status it was told to fail with for paths
//! containing some text.
//!
//! ```ignore
//! let jira = FakeTracker::start().await;
//! jira.fail("SHOP-2", 500);
//! // … a release …
//! assert_eq!(jira.taken("/rest/api/3/issue/SHOP-1/comment").len(), 1);
//! ```

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Request, State};
use http::{HeaderMap, Method, StatusCode};

/// One request as the tracker saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// Path and query as sent, escapes kept.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the fake answered.
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers.keys().collect::<Vec<_>>()))
    }
}

#[derive(Debug, Default)]
struct Inner {
    received: Vec<Received>,
    /// `(text in the path, status)`: requests whose path contains the text get the status.
    failing: Vec<(String, u16)>,
}

/// See the [module docs](self).
#[derive(Debug, Clone)]
pub struct FakeTracker {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, request: Request) -> (StatusCode, String) {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let mut inner = inner.lock().expect("not poisoned");
    let status = inner
        .failing
        .iter()
        .find(|(text, _)| path.contains(text.as_str()))
        .map_or(201, |(_, status)| *status);
    inner.received.push(Received {
        method: parts.method,
        path,
        headers: parts.headers,
        body,
        status,
    });
    let status = StatusCode::from_u16(status).expect("a status");
    let body = if status.is_success() {
        r#"{"id": "1"}"#
    } else {
        "down for maintenance"
    };
    (status, body.to_owned())
}

impl FakeTracker {
    /// Listens on a free port of 127.0.0.1 for as long as the test's runtime lives.
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new().fallback(receive).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, inner }
    }

    /// Requests whose path contains `text` are answered `status` from now on.
    pub fn fail(&self, text: &str, status: u16) {
        self.inner
            .lock()
            .expect("not poisoned")
            .failing
            .push((text.to_owned(), status));
    }

    /// Every request is answered 201 again.
    pub fn recover(&self) {
        self.inner.lock().expect("not poisoned").failing.clear();
    }

    /// Every request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("not poisoned").received.clone()
    }

    /// The requests to `path` that it took (answered 2xx).
    pub fn taken(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path && (200..300).contains(&r.status))
            .collect()
    }

    /// The paths of every request it took, in order.
    pub fn taken_paths(&self) -> Vec<String> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| r.path)
            .collect()
    }
}
