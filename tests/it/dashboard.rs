//! `codex-remote dashboard`: the page driven in a real headless Chromium (chromedriver through
//! fantoccini) against the `local` machine and a machine behind a real loopback sshd, and plain
//! HTTP requests for what it must refuse (foreign Host, cross-origin or secretless POSTs).
//!
//! Without Chromium the browser test is skipped, except under `CI=true`, where it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::{Sshd, TestEnv, wait_until};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const XSS_NAME: &str = "<img src=x onerror=alert(1)>";
const WAIT: Duration = Duration::from_secs(30);

/// A running `codex-remote dashboard --listen 127.0.0.1:0`.
pub struct DashboardProcess {
    child: Child,
    url: String,
    /// `host:port` as the URL has it.
    host: String,
}

impl DashboardProcess {
    pub fn start(env: &TestEnv, listen: &str) -> Self {
        Self::spawn(env.remote(&["dashboard", "--listen", listen]))
    }

    /// With `--open` and `opener` as `$BROWSER`.
    pub fn start_opened(env: &TestEnv, opener: &std::path::Path) -> Self {
        let mut cmd = env.remote(&["dashboard", "--listen", "127.0.0.1:0", "--open"]);
        cmd.env("BROWSER", opener);
        Self::spawn(cmd)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn spawn(mut cmd: std::process::Command) -> Self {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(v["type"], "listening", "{v}");
        let url = v["url"].as_str().unwrap().to_string();
        let host = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        DashboardProcess { child, url, host }
    }

    pub fn port(&self) -> u16 {
        self.host.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    /// The token of the printed URL.
    pub fn token(&self) -> String {
        self.url.split_once("?token=").expect("a token in the URL").1.to_string()
    }

    /// The first visit's exchange: the token for a cookie; returns the `name=value` pair.
    fn cookie(&self) -> String {
        let path = format!("/?token={}", self.token());
        let r =
            http(self.port(), "GET", &path, &[("Host", &format!("127.0.0.1:{}", self.port()))], "");
        assert_eq!(r.status, 303, "{}", r.body);
        let cookie = r.header("set-cookie").expect("the token cookie");
        cookie.split(';').next().unwrap().to_string()
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port`; returns the status, the headers (lower-case
/// names) and the body.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Http {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("0").parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Http { status, headers, body: body.to_string() }
}

pub struct Http {
    pub status: u16,
    headers: Vec<(String, String)>,
    pub body: String,
}

impl Http {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The secret the served page carries.
fn page_secret(page: &str) -> String {
    let at = page.find("name=\"dashboard-secret\" content=\"").expect("the secret meta tag");
    let rest = &page[at + "name=\"dashboard-secret\" content=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

pub fn local_jobs(env: &TestEnv) -> usize {
    env.ok(&["exec", "list", "--machine", "local"])["jobs"].as_array().unwrap().len()
}

#[test]
fn dashboard_refuses_foreign_host_and_cross_origin_posts() {
    let env = TestEnv::new();
    let dash = DashboardProcess::start(&env, "127.0.0.1:0");
    let port = dash.port();
    let own = dash.host.as_str();
    let origin = format!("http://{own}");
    // Every request below carries the token's cookie: what is refused, is refused for its Host,
    // Origin or secret (the token itself is `dashboard_needs_its_token_on_loopback_too`).
    let cookie = dash.cookie();
    let cookie = ("Cookie", cookie.as_str());
    let http = |port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str| {
        let mut with_cookie = headers.to_vec();
        with_cookie.push(cookie);
        http(port, method, path, &with_cookie, body)
    };

    let page = http(port, "GET", "/", &[("Host", own)], "");
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert!(page.header("content-security-policy").unwrap().contains("script-src 'self'"));
    let secret = page_secret(&page.body);
    assert_eq!(secret.len(), 64);
    let loopback_name = format!("localhost:{port}");
    assert_eq!(http(port, "GET", "/api/jobs", &[("Host", &loopback_name)], "").status, 200);

    // DNS rebinding: a foreign name that resolves to 127.0.0.1, with or without the port.
    for host in [format!("evil.example:{port}"), "evil.example".to_string()] {
        let r = http(port, "GET", "/", &[("Host", &host)], "");
        assert_eq!(r.status, 403, "Host {host}: {}", r.body);
        assert!(!r.body.contains(&secret), "a refused page must not carry the secret");
        assert_eq!(http(port, "GET", "/api/jobs", &[("Host", &host)], "").status, 403);
    }

    let start = r#"{"machine":"local","cmd":"echo started"}"#;
    let json = ("Content-Type", "application/json");
    // A cross-origin form or fetch: no secret.
    for ct in ["application/json", "text/plain", "application/x-www-form-urlencoded"] {
        let headers = [("Host", own), ("Origin", "http://evil.example"), ("Content-Type", ct)];
        let r = http(port, "POST", "/api/jobs", &headers, start);
        assert_eq!(r.status, 403, "{ct}: {}", r.body);
        assert_eq!(r.header("access-control-allow-origin"), None);
    }
    // The secret from a stolen page does not help another origin, nor a wrong secret this one.
    let from_evil =
        [("Host", own), ("Origin", "http://evil.example"), json, ("X-Dashboard-Secret", &secret)];
    assert_eq!(http(port, "POST", "/api/jobs", &from_evil, start).status, 403);
    let cross_site =
        [("Host", own), ("Sec-Fetch-Site", "cross-site"), json, ("X-Dashboard-Secret", &secret)];
    assert_eq!(http(port, "POST", "/api/jobs", &cross_site, start).status, 403);
    let zeros = "0".repeat(64);
    let wrong = [("Host", own), ("Origin", &origin), json, ("X-Dashboard-Secret", zeros.as_str())];
    assert_eq!(http(port, "POST", "/api/jobs", &wrong, start).status, 403);
    // A CORS preflight gets no CORS answer.
    let preflight = [
        ("Host", own),
        ("Origin", "http://evil.example"),
        ("Access-Control-Request-Method", "POST"),
    ];
    let r = http(port, "OPTIONS", "/api/jobs", &preflight, "");
    assert!(r.status >= 400 && r.header("access-control-allow-origin").is_none(), "{}", r.status);
    // State changes are POST only, even with the secret.
    let with_secret = [("Host", own), json, ("X-Dashboard-Secret", &secret)];
    let id = "01a20e5f-8081-73ff-8d3b-1e5348583bcf";
    assert_eq!(
        http(port, "GET", &format!("/api/jobs/local/{id}/cancel"), &with_secret, "").status,
        405
    );
    assert_eq!(local_jobs(&env), 0, "nothing refused may have started a job");

    // The page's own request works, so the refusals above are not a blanket failure.
    let own_post = [("Host", own), ("Origin", &origin), json, ("X-Dashboard-Secret", &secret)];
    let r = http(port, "POST", "/api/jobs", &own_post, start);
    assert_eq!(r.status, 200, "{}", r.body);
    let job: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        (job["machine"].as_str(), job["cmd"].as_str()),
        (Some("local"), Some("echo started"))
    );
    assert_eq!(local_jobs(&env), 1);
}

#[test]
fn dashboard_needs_its_token_on_loopback_too() {
    let env = TestEnv::new();
    let dash = DashboardProcess::start(&env, "127.0.0.1:0");
    let port = dash.port();
    let own = dash.host.as_str();
    let token = dash.token();
    assert_eq!(token.len(), 64);
    let start = r#"{"machine":"local","cmd":"echo started"}"#;
    let json = ("Content-Type", "application/json");
    let id = "01a20e5f-8081-73ff-8d3b-1e5348583bcf";
    let logs = format!("/api/jobs/local/{id}/logs");

    // Another user of the laptop knows the port, not the token: no page, no secret, no API, no
    // events, whatever else the request carries.
    let wrong = format!("/?token={}", "0".repeat(64));
    let bad_cookie = format!("codex_dashboard_{port}={}", "0".repeat(64));
    let gets = ["/", "/app.js", "/api/machines", "/api/jobs", logs.as_str(), wrong.as_str()];
    for path in gets {
        for extra in [("X-Other", "1"), ("Cookie", bad_cookie.as_str())] {
            let r = http(port, "GET", path, &[("Host", own), extra], "");
            assert_eq!(r.status, 401, "GET {path}: {}", r.body);
            let body: Value = serde_json::from_str(&r.body).expect("a JSON refusal");
            assert_eq!(
                (body["type"].as_str(), body["code"].as_str()),
                (Some("error"), Some("unauthorized"))
            );
            assert!(!r.body.contains("dashboard-secret"), "no secret without the token");
        }
    }
    // Even with the page's secret guessed right, a POST needs the token first.
    for path in ["/api/jobs", "/api/machines/local/up"] {
        let r = http(port, "POST", path, &[("Host", own), json], start);
        assert_eq!(r.status, 401, "POST {path}: {}", r.body);
        assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["code"], "unauthorized");
    }
    assert_eq!(local_jobs(&env), 0, "nothing refused may have started a job");

    // The first visit exchanges the token for a cookie and drops it from the address bar.
    let r = http(port, "GET", &format!("/?token={token}"), &[("Host", own)], "");
    assert_eq!((r.status, r.header("location")), (303, Some("/")), "{}", r.body);
    let set = r.header("set-cookie").expect("the token cookie").to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.split("; ").any(|p| p == part), "{part} in {set}");
    }
    let r = http(port, "GET", &format!("/api/jobs?x=1&token={token}"), &[("Host", own)], "");
    assert_eq!((r.status, r.header("location")), (303, Some("/api/jobs?x=1")));
    let cookie = set.split(';').next().unwrap().to_string();
    let page = http(port, "GET", "/", &[("Host", own), ("Cookie", &cookie)], "");
    assert_eq!(page.status, 200, "{}", page.body);
    let secret = page_secret(&page.body);
    let origin = format!("http://{own}");
    let post = [("Host", own), ("Origin", &origin), json, ("X-Dashboard-Secret", &secret)];
    let mut with_cookie = post.to_vec();
    with_cookie.push(("Cookie", &cookie));
    let r = http(port, "POST", "/api/jobs", &with_cookie, start);
    assert_eq!(r.status, 200, "{}", r.body);
    // The token itself works too: in the query of a POST, or as a bearer token (any case).
    let r = http(port, "POST", &format!("/api/jobs?token={token}"), &post, start);
    assert_eq!(r.status, 200, "{}", r.body);
    let bearer = format!("bearer {token}");
    assert_eq!(
        http(port, "GET", "/api/jobs", &[("Host", own), ("Authorization", &bearer)], "").status,
        200
    );
    assert_eq!(local_jobs(&env), 2);

    // Another dashboard's cookie (another port, another token) opens nothing here.
    let other = DashboardProcess::start(&env, "127.0.0.1:0");
    let theirs = other.cookie();
    assert_ne!(theirs.split('=').next(), cookie.split('=').next(), "one cookie name per port");
    let renamed = format!("codex_dashboard_{port}={}", theirs.split_once('=').unwrap().1);
    for c in [theirs.as_str(), renamed.as_str()] {
        assert_eq!(http(port, "GET", "/", &[("Host", own), ("Cookie", c)], "").status, 401);
    }
}

#[test]
fn dashboard_off_loopback_needs_the_token() {
    let env = TestEnv::new();
    let dash = DashboardProcess::start(&env, "0.0.0.0:0");
    let port = dash.port();
    let host = format!("127.0.0.1:{port}");
    let token = dash.url.split_once("?token=").expect("a token in the URL").1.to_string();
    assert_eq!(token.len(), 64);
    assert_eq!(http(port, "GET", "/", &[("Host", &host)], "").status, 401);
    assert_eq!(http(port, "GET", "/?token=wrong", &[("Host", &host)], "").status, 401);
    let r = http(port, "GET", &format!("/?token={token}"), &[("Host", &host)], "");
    // The token is exchanged for the cookie with a redirect to the URL without it.
    assert_eq!((r.status, r.header("location")), (303, Some("/")));
    let cookie = r.header("set-cookie").expect("the token cookie").to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(
        http(port, "GET", "/api/jobs", &[("Host", &host), ("Cookie", pair)], "").status,
        200
    );
}

/// Chromium and chromedriver, or `None` (skip) outside CI.
fn browser_installed() -> bool {
    if Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "chromium and chromium-driver are missing: .ci/run installs them"
    );
    eprintln!("skipping the browser test: apt-get install chromium chromium-driver");
    false
}

/// A chromedriver on a free port and a headless Chromium session through it.
struct Browser {
    driver: Child,
    client: Option<Client>,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    fn start(profile: PathBuf) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let up = wait_until(WAIT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(up, "chromedriver did not listen on {port}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({ "goog:chromeOptions": { "binary": CHROMIUM, "args": args } });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(
                ClientBuilder::new(connector)
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}")),
            )
            .expect("a Chromium session");
        Browser { driver, client: Some(client), rt }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.client().goto(url)).unwrap();
    }

    /// Runs `script` in the page and returns what it returns.
    fn js(&self, script: &str) -> Value {
        self.rt.block_on(self.client().execute(script, vec![])).unwrap()
    }

    /// Clicks `css`, finding it again if the page re-rendered it in between (tables refresh).
    fn click(&self, css: &str) {
        let clicked = wait_until(WAIT, || {
            self.rt.block_on(async {
                match self.client().find(Locator::Css(css)).await {
                    Ok(el) => el.click().await.is_ok(),
                    Err(_) => false,
                }
            })
        });
        assert!(clicked, "could not click {css}");
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.rt.block_on(self.client().find(Locator::Css(css))).unwrap();
        self.rt.block_on(el.send_keys(text)).unwrap();
    }

    fn select(&self, css: &str, value: &str) {
        let el = self.rt.block_on(self.client().find(Locator::Css(css))).unwrap();
        self.rt.block_on(el.select_by_value(value)).unwrap();
    }

    /// Polls `script` until it returns true.
    fn wait_for(&self, what: &str, script: &str) {
        // A script that errs (a page busy past the driver's script timeout under load) is "not yet".
        let ok = wait_until(WAIT, || {
            self.rt.block_on(self.client().execute(script, vec![])).ok() == Some(Value::Bool(true))
        });
        let page = self.js("return document.body.innerText");
        assert!(ok, "{what}: never true: {script}\npage:\n{}", page.as_str().unwrap_or(""));
    }

    fn alert_open(&self) -> bool {
        self.rt.block_on(self.client().get_alert_text()).is_ok()
    }

    fn screenshot(&self) -> Vec<u8> {
        self.rt.block_on(self.client().screenshot()).unwrap()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A JS expression: the text of `css`'s first match, or "".
fn text_of(css: &str) -> String {
    format!("(document.querySelector({css:?}) || {{textContent: ''}}).textContent")
}

#[test]
fn dashboard_in_chromium_starts_follows_cancels_and_escapes() {
    if !browser_installed() {
        return;
    }
    let env = TestEnv::new();
    let sshd = Sshd::start(env.dir.path());
    env.set_config(&format!("machines:\n{}", sshd.machine_yaml("box", &env.path("box-data"), "")));

    // Jobs made before the page opens: one with markup in its name and output, one to cancel.
    let xss = env.ok(&[
        "exec",
        "start",
        "--machine",
        "local",
        "--name",
        XSS_NAME,
        "--cmd",
        "echo '<img src=y onerror=alert(2)><b>bold</b>'",
    ]);
    let xss_id = xss["exec_id"].as_str().unwrap().to_string();
    env.wait("local", &xss_id);
    let doomed =
        env.ok(&["exec", "start", "--machine", "box", "--name", "doomed", "--cmd", "sleep 300"]);
    let doomed_id = doomed["exec_id"].as_str().unwrap().to_string();
    env.started("box", &doomed_id);
    let done =
        env.ok(&["exec", "start", "--machine", "box", "--name", "warmup", "--cmd", "seq 1 5"]);
    env.wait("box", done["exec_id"].as_str().unwrap());

    let dash = DashboardProcess::start(&env, "127.0.0.1:0");
    let browser = Browser::start(env.path("chromium-profile"));
    browser.goto(&dash.url);

    // Both machines are checked: codexd answers over the local child and over ssh.
    for name in ["local", "box"] {
        browser.wait_for(
            &format!("{name} checked ok"),
            &format!("return document.querySelector('#machines tr[data-machine=\"{name}\"][data-ok=\"true\"]') !== null"),
        );
    }
    let version = browser
        .js(&format!("return {}", text_of("#machines tr[data-machine=\"box\"] td:nth-child(5)")));
    assert_eq!(version, env!("CARGO_PKG_VERSION"));

    // The job with markup in its name and output shows it as text: no img element, no alert.
    let names = "return [...document.querySelectorAll('#jobs td.name')].map(e => e.textContent)";
    let ok = wait_until(WAIT, || {
        browser.js(names).as_array().is_some_and(|a| a.iter().any(|n| n == XSS_NAME))
    });
    assert!(ok, "the XSS job's name as text: {}", browser.js(names));
    browser.click(&format!("#jobs tr[data-id=\"{xss_id}\"] td.cmd"));
    browser.wait_for(
        "the XSS job's output as text",
        &format!("return {}.includes('<img src=y onerror=alert(2)><b>bold</b>')", text_of("#log")),
    );
    assert_eq!(browser.js("return document.querySelectorAll('img, b, #log *:not(div)').length"), 0);
    assert!(!browser.alert_open(), "an alert ran: markup from a job was executed");

    // Start a job from the form on the ssh machine and see its output while it runs.
    let go = env.path("go");
    let cmd = format!(
        "echo first-$((40+2)); while [ ! -e {go} ]; do sleep 0.05; done; echo second-$((40+2))",
        go = go.display()
    );
    browser.select("#start-form select[name=machine]", "box");
    browser.type_into("#start-form input[name=cmd]", &cmd);
    browser.type_into("#start-form input[name=name]", "from-the-form");
    browser.click("#start-form button[type=submit]");
    browser.wait_for(
        "the new job's view",
        "const v = document.getElementById('job-view'); return !v.hidden && v.dataset.machine === 'box' && v.dataset.id !== undefined && v.dataset.id.length > 0 && document.getElementById('view-cmd').textContent.includes('first-')",
    );
    browser.wait_for(
        "the first line while the job runs",
        &format!(
            "return {}.includes('first-42') && {}.startsWith('running')",
            text_of("#log"),
            text_of("#view-state")
        ),
    );
    assert!(
        !browser.js(&format!("return {}", text_of("#log"))).as_str().unwrap().contains("second-42")
    );
    std::fs::write(&go, "").unwrap();
    browser.wait_for("second line", &format!("return {}.includes('second-42')", text_of("#log")));
    browser.wait_for(
        "the end of the stream",
        &format!("return document.getElementById('job-view').dataset.ended === 'true' && {}.startsWith('succeeded')", text_of("#view-state")),
    );
    let started_id = browser.js("return document.getElementById('job-view').dataset.id");
    let status =
        env.ok(&["exec", "result", "--machine", "box", "--id", started_id.as_str().unwrap()]);
    assert_eq!(
        (status["state"].as_str(), status["name"].as_str()),
        (Some("succeeded"), Some("from-the-form"))
    );

    // Cancel the sleeping job.
    let row = format!("#jobs tr[data-id=\"{doomed_id}\"]");
    browser.wait_for(
        "the Cancel button",
        &format!("return document.querySelector('{row} button.cancel') !== null"),
    );
    browser.click(&format!("{row} button.cancel"));
    browser.wait_for(
        "cancelled",
        &format!("return document.querySelector('{row}[data-state=\"cancelled\"]') !== null"),
    );
    assert_eq!(
        env.ok(&["exec", "result", "--machine", "box", "--id", &doomed_id])["state"],
        "cancelled"
    );

    // A log longer than the view keeps: the oldest lines go and one mark says how many.
    let go2 = env.path("go2");
    let cmd = format!("while [ ! -e {} ]; do sleep 0.05; done; seq 1 7000", go2.display());
    browser.js("for (const n of ['cmd', 'name']) document.querySelector(`#start-form input[name=${n}]`).value = ''; return true");
    browser.select("#start-form select[name=machine]", "local");
    browser.type_into("#start-form input[name=cmd]", &cmd);
    browser.click("#start-form button[type=submit]");
    browser.wait_for(
        "the long job's view, running",
        &format!(
            "return {}.includes('seq 1 7000') && {}.startsWith('running')",
            text_of("#view-cmd"),
            text_of("#view-state")
        ),
    );
    std::fs::write(&go2, "").unwrap();
    browser.wait_for(
        "the last of 7000 lines",
        "const l = document.getElementById('log'); return l.lastChild !== null && l.lastChild.textContent === '7000'",
    );
    let dropped = browser.js(&format!("return {}", text_of("#log .dropped")));
    assert!(dropped.as_str().unwrap().contains("2000 lines dropped"), "{dropped}");
    assert_eq!(browser.js("return document.querySelectorAll('#log div.stdout').length"), 5000);
    assert_eq!(browser.js(&format!("return {}", text_of("#log div.stdout"))), "2001");
    // Scrolling up stops the auto-scroll.
    browser.js("const l = document.getElementById('log'); l.scrollTop = 0; l.dispatchEvent(new Event('scroll')); return true");
    browser.wait_for(
        "auto-scroll paused",
        &format!("return {}.includes('paused')", text_of("#log-follow")),
    );

    // Up on the ssh machine: codexd is there and current, so it ends ready.
    browser.click("#machines tr[data-machine=\"box\"] button.up");
    browser.wait_for(
        "machine up ready",
        "const r = document.querySelector('#machines tr[data-machine=\"box\"] .up-result'); return r !== null && r.dataset.ok === 'true' && r.dataset.stage === 'ready'",
    );
    let stages =
        browser.js(&format!("return {}", text_of("#machines tr[data-machine=\"box\"] .up-cell")));
    assert!(stages.as_str().unwrap().contains("✓ ready"), "{stages}");

    assert!(!browser.alert_open());
    assert_eq!(browser.js("return document.querySelectorAll('img').length"), 0);

    // The screenshot for the README: `scripts/dashboard-screenshot.sh` sets DASHBOARD_SCREENSHOT.
    browser.click(&format!("#jobs tr[data-id=\"{}\"] td.cmd", started_id.as_str().unwrap()));
    browser.wait_for(
        "the view ended",
        "return document.getElementById('job-view').dataset.ended === 'true'",
    );
    let png = browser.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG screenshot");
    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }
}
