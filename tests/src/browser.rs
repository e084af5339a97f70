//! Real headless Chromium for the page tests (`tests/scenarios/browser.rs`), driven over
//! WebDriver by [`fantoccini`] through Debian's `chromedriver`.
//!
//! [`Chromedriver::start`] runs one chromedriver on a free loopback port for a whole test
//! binary and stops it when dropped. [`Chromedriver::open`] starts a headless Chromium
//! (`--headless=new --no-sandbox --disable-gpu`, its own temporary profile) in a new session.
//! A [`Browser`] reads the browser's console log after each page: any error there, a
//! Content-Security-Policy violation included, is a [problem](Browser::problems).
//!
//! The binaries are found through the `CHROME` and `CHROMEDRIVER` environment variables, or at
//! Debian's paths (`/usr/bin/chromium`, `/usr/bin/chromedriver`). Missing ones are an error
//! that says how to install them; the tests never skip.

use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How to get the binaries, for every error that finds one missing.
const INSTALL: &str = "install them with `apt-get install chromium chromium-driver` (scripts/test does this when apt-get is available), or point CHROME and CHROMEDRIVER at them";

/// How long a page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);

/// A chromedriver process on a loopback port, killed when dropped.
#[derive(Debug)]
pub struct Chromedriver {
    child: Child,
    url: String,
    chrome: PathBuf,
    log: tempfile::NamedTempFile,
}

impl Chromedriver {
    /// Starts chromedriver on a free loopback port and waits until it accepts connections.
    pub fn start() -> Result<Self, String> {
        let chrome = binary("CHROME", "/usr/bin/chromium", "Chromium")?;
        let driver = binary("CHROMEDRIVER", "/usr/bin/chromedriver", "chromedriver")?;
        let port = free_port().map_err(|e| format!("no free loopback port for chromedriver: {e}"))?;
        let log =
            tempfile::NamedTempFile::new().map_err(|e| format!("no temporary file for chromedriver's log: {e}"))?;
        let log_file = log.reopen().map_err(|e| format!("chromedriver's log: {e}"))?;
        let child = Command::new(&driver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("could not start {}: {e}; {INSTALL}", driver.display()))?;
        let mut started = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chrome,
            log,
        };
        started.wait_until_listening(SocketAddr::from(([127, 0, 0, 1], port)))?;
        Ok(started)
    }

    fn wait_until_listening(&mut self, addr: SocketAddr) -> Result<(), String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "chromedriver exited ({status}) before listening: {}",
                    self.log_text()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "chromedriver did not listen on {addr} within {PATIENCE:?}: {}",
                    self.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// A new headless Chromium with an empty temporary profile, its console log kept for
    /// [`Browser::problems`].
    pub async fn open(&self) -> Result<Browser, String> {
        let profile = tempfile::tempdir().map_err(|e| format!("no temporary profile directory: {e}"))?;
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": self.chrome,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--no-first-run",
                    "--window-size=1000,1200",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("json! of an object is an object")
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .map_err(|e| {
                format!(
                    "chromedriver could not start {}: {e}; {}",
                    self.chrome.display(),
                    self.log_text()
                )
            })?;
        Ok(Browser {
            client,
            _profile: std::sync::Arc::new(profile),
        })
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binary `var` names, or Debian's `default`; an error naming how to install it.
fn binary(var: &str, default: &str, what: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the browser tests need {what}, and there is none at {} (set by {var} or Debian's default); {INSTALL}",
            path.display()
        ))
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Serves `router` on `listener` (bound with [`listen`]) until the test's runtime ends.
pub fn serve(listener: tokio::net::TcpListener, router: Router) {
    tokio::spawn(async move { axum::serve(listener, router).await });
}

/// A listener on a free loopback port, and its base URL (`http://127.0.0.1:PORT`): bind first,
/// so the app can be configured with the URL its links are built from.
pub async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    (listener, format!("http://{addr}"))
}

/// One headless Chromium session; clones share it. [`close`](Browser::close) it at the end.
#[derive(Debug, Clone)]
pub struct Browser {
    pub client: Client,
    _profile: std::sync::Arc<tempfile::TempDir>,
}

/// chromedriver's log endpoint: the console messages since the last read.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

impl Browser {
    /// Opens `url` as typing it in the address bar would.
    pub async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("could not open {url}: {e}"));
    }

    /// The element `css` selects; waits for it up to a few seconds.
    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(found) => found,
            Err(e) => panic!("no {css} on {}: {e}", self.url().await),
        }
    }

    /// Every element `css` selects, now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("could not look for {css}: {e}"))
    }

    /// Clicks the element `css` selects, as a person would with the mouse.
    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("could not click {css}: {e}"));
    }

    /// Waits until the page's title starts with `title` (after a click that navigates), and
    /// returns the whole title.
    pub async fn wait_for_title(&self, title: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let now = self.title().await;
            if now.starts_with(title) {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "the page {} is titled {now:?}, not {title:?}: {}",
                self.url().await,
                self.text().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn title(&self) -> String {
        self.client.title().await.unwrap_or_else(|e| panic!("no title: {e}"))
    }

    pub async fn url(&self) -> url::Url {
        self.client
            .current_url()
            .await
            .unwrap_or_else(|e| panic!("no current URL: {e}"))
    }

    /// The text a person reads on the page.
    pub async fn text(&self) -> String {
        self.find("body")
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("no text: {e}"))
    }

    /// The console's errors and Content-Security-Policy reports since the last call: what a
    /// person would see in the developer tools' console as red, or as a blocked resource.
    pub async fn problems(&self) -> Vec<String> {
        let log = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .unwrap_or_else(|e| panic!("chromedriver gave no browser log: {e}"));
        let entries = log.as_array().cloned().unwrap_or_default();
        entries
            .iter()
            .filter(|entry| {
                let level = entry["level"].as_str().unwrap_or_default();
                let message = entry["message"].as_str().unwrap_or_default();
                level == "SEVERE" || message.contains("Content Security Policy")
            })
            .map(|entry| format!("{}: {}", entry["level"], entry["message"]))
            .collect()
    }

    /// Fails the test when the page logged an error or a policy violation since the last
    /// check.
    pub async fn assert_no_problems(&self, page: &str) {
        let problems = self.problems().await;
        assert!(problems.is_empty(), "{page}: the browser reported {problems:#?}");
    }

    /// Saves what the browser shows as `dir/name.png`.
    pub async fn screenshot(&self, dir: &Path, name: &str) {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("no screenshot: {e}"));
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("could not create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("could not write {}: {e}", path.display()));
    }

    /// Ends the session (for every clone): Chromium exits, and its profile is removed once the
    /// last clone is dropped.
    pub async fn close(self) {
        if let Err(e) = self.client.clone().close().await {
            eprintln!("closing the browser session: {e}");
        }
    }
}
