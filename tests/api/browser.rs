//! A real headless Chromium (Debian's `chromium` and `chromium-driver`) driven over WebDriver
//! (fantoccini), for the console's end-to-end tests. chromedriver listens on a free loopback
//! port; Chromium gets a fresh profile and flags that keep it off the network: it may only
//! reach the app under test on 127.0.0.1.
//!
//! One browser at a time in this test binary (the machine is small), and every wait is for a
//! condition with a deadline.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use ordo_api::Role;
use serde_json::{json, Map, Value};
use tokio::sync::{Mutex, MutexGuard};

use crate::helpers::TestApp;

/// How long any wait for the page lasts before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

pub struct Browser {
    pub client: Client,
    pub base: String,
    driver: Option<Child>,
    profile: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

fn program(name: &str, fallback: &str) -> String {
    for dir in ["/usr/bin", "/usr/lib/chromium"] {
        let path = format!("{dir}/{name}");
        if std::path::Path::new(&path).exists() {
            return path;
        }
    }
    panic!(
        "{name} is not installed: apt-get install -y chromium chromium-driver \
         (scripts/dev-services installs them) — {fallback}"
    )
}

/// The flags the session's Chromium runs with: headless, no background traffic, and a
/// resolver that resolves no name at all (the app is reached by its loopback IP address).
fn chromium_args(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-client-side-phishing-detection",
        "--disable-dev-shm-usage",
        "--no-default-browser-check",
        "--no-pings",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--window-size=1280,900",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

impl Browser {
    /// Start chromedriver and a Chromium session for `app`.
    pub async fn start(app: &TestApp) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let chromium = program("chromium", "the browser");
        let chromedriver = program("chromedriver", "its WebDriver server");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new(chromedriver);
        command
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that Drop ends the browsers it started along with it.
        command.process_group(0);
        let driver = command.spawn().expect("chromedriver starts");
        let profile = std::env::temp_dir().join(format!("ordo-chromium-{}", uuid::Uuid::new_v4()));
        let mut caps = Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": chromium_args(&profile)}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + DEADLINE;
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session: {e}"),
            }
        };
        Self {
            client,
            base: app.base.replace("localhost", "127.0.0.1"),
            driver: Some(driver),
            profile,
            _turn: turn,
        }
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("page opens");
    }

    /// Sign in on the sign-in page with `app`'s key for `role`.
    pub async fn sign_in(&self, app: &TestApp, role: Role) {
        self.sign_in_with(app.key(role), role).await;
    }

    /// Sign in with `key`, a key of `role`.
    pub async fn sign_in_with(&self, key: &str, role: Role) {
        self.goto("/console/sign-in").await;
        self.find("#key")
            .await
            .send_keys(key)
            .await
            .expect("key typed");
        self.click("form.signin button").await;
        self.wait_for_text("header.top .who", role.as_str()).await;
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.expect("clicked");
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    /// Wait until the element matching `css` contains `needle` in its text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = match self.client.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "`{css}` never contained {needle:?}; last text: {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Wait until `script` (run in the page) returns `true`; `what` names the condition
    /// when it never does.
    pub async fn wait_until(&self, script: &str, what: &str) {
        let deadline = Instant::now() + DEADLINE;
        while self.js(script).await != json!(true) {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Run `script` in the page and return its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        if let Some(mut driver) = self.driver.take() {
            end(&mut driver).await;
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}

/// End chromedriver's process group (the browser with it).
async fn end(driver: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{}", driver.id())])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = driver.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = driver.kill();
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        // A failed test never reached `close`: end the browser's process group anyway.
        if let Some(driver) = self.driver.as_mut() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", driver.id())])
                .status();
            let _ = driver.kill();
            let _ = driver.wait();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
