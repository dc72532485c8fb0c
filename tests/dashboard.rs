//! The dashboard in headless Chromium (driven over WebDriver by chromedriver):
//! the page loads, shows the plugins, and a click restarts one.

#![allow(clippy::unwrap_used)]

mod common;

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::serve::{Corral, Db, TestDatabase, plugins};
use serde_json::{Value, json};

const SECRET: &str = "dashboard-test-secret-long-enough";

struct Driver {
    process: Child,
    url: String,
    session: String,
    client: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group: dropping the driver kills the browser with it.
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is needed: apt-get install chromium chromium-driver (scripts/test does)");
        let url = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + common::DEADLINE;
        loop {
            let ready = client.get(format!("{url}/status")).send().await;
            if let Ok(response) = ready
                && let Ok(body) = response.json::<Value>().await
                && body["value"]["ready"] == true
            {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-background-networking", "--disable-component-update",
                         "--no-first-run", "--disable-sync",
                         format!("--user-data-dir={}", profile.path().display())],
            },
        }}});
        let created: Value = client
            .post(format!("{url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Self {
            process,
            url,
            session,
            client,
            _profile: profile,
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.url, self.session);
        let response: Value = self
            .client
            .request(method, url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            response["value"].get("error").is_none(),
            "{path}: {response}"
        );
        response["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    async fn script(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            json!({"script": script, "args": args}),
        )
        .await
    }

    /// Waits until `script` returns a truthy value; returns it.
    async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + common::DEADLINE;
        loop {
            let value = self.script(script, json!([])).await;
            if !(value.is_null() || value == false || value == "") {
                return value;
            }
            assert!(Instant::now() < deadline, "not seen in time: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn click(&self, selector: &str) {
        let element = self
            .call(
                reqwest::Method::POST,
                "/element",
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        let id = element
            .as_object()
            .and_then(|object| object.values().next())
            .and_then(Value::as_str)
            .unwrap()
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            json!({}),
        )
        .await;
    }
}

impl Driver {
    /// Ends the browser session (the browser quits).
    async fn quit(&self) {
        let _ = self
            .client
            .delete(format!("{}/session/{}", self.url, self.session))
            .send()
            .await;
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        common::signal_group(self.process.id(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.process.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_plugins_and_a_click_restarts_one() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve_with(
        &database,
        &[&plugins()],
        &["--jwt-secret-file", &database.secret_file(SECRET)],
    );
    corral.wait_for_plugins(&["hello-world@v0-2-1"]).await;
    let task_url = corral
        .submit("hello-world@v0-2-1", &[("inputStr", "shown")])
        .await;
    corral.finished(&task_url).await;
    let task_id = common::serve::task_id(&task_url);

    let driver = Driver::start().await;
    driver.open(&corral.url("/dashboard/")).await;
    driver
        .until(
            "the page loaded its data",
            "return document.body.dataset.loaded === 'true';",
        )
        .await;
    let names = driver
        .script(
            "return Array.from(document.querySelectorAll('#plugins td.name')).map(td => td.textContent);",
            json!([]),
        )
        .await;
    assert_eq!(
        names,
        json!([
            "csv-visualization",
            "file-upload",
            "hello-world",
            "hello-world-multi-step",
            "json-visualization",
            "manual-classification"
        ])
    );
    let state = driver
        .script(
            "return document.querySelector('tr[data-plugin=\"hello-world\"] td.state').textContent;",
            json!([]),
        )
        .await;
    assert_eq!(state, "ready");
    // Everyone's tasks are for admins: none are listed without the token.
    let tasks = driver
        .script(
            "return document.querySelectorAll('#tasks tbody tr').length;",
            json!([]),
        )
        .await;
    assert_eq!(tasks, 0);
    let old_pid = driver
        .script(
            "return document.querySelector('tr[data-plugin=\"hello-world\"] td.pid').textContent;",
            json!([]),
        )
        .await;

    // The admin token goes into the page; the button restarts the plugin.
    let token = common::token(SECRET, &["admin"]);
    driver
        .script(
            "const input = document.getElementById('token'); input.value = arguments[0]; \
             input.dispatchEvent(new Event('change'));",
            json!([token]),
        )
        .await;
    // With the token the recent tasks show.
    let tasks = driver
        .until(
            "the task list",
            "return document.querySelector('#tasks tbody').textContent;",
        )
        .await;
    assert!(tasks.as_str().unwrap().contains(&task_id), "{tasks}");
    driver
        .click("tr[data-plugin=\"hello-world\"] button.restart")
        .await;
    let notice = driver
        .until(
            "the restart was reported",
            "const text = document.getElementById('notice').textContent; \
             return text.startsWith('Restarted hello-world') ? text : null;",
        )
        .await;
    assert!(
        notice
            .as_str()
            .unwrap()
            .starts_with("Restarted hello-world (pid "),
        "{notice}"
    );
    let shown = driver
        .until(
            "the new state shown",
            "const row = document.querySelector('tr[data-plugin=\"hello-world\"]'); \
             return row && row.querySelector('td.restarts').textContent === '1' \
               ? row.querySelector('td.pid').textContent : null;",
        )
        .await;
    assert_ne!(shown, old_pid);
    driver.quit().await;
}
