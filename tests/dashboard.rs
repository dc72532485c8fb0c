//! The dashboard in headless Chromium (driven over WebDriver by chromedriver):
//! the page loads, shows the plugins, and a click restarts one; the tasks
//! panel filters, shows a task, cancels and retries; the dashboard, a plugin's
//! form page and the API docs fit a phone's screen. With `CORRAL_SCREENSHOTS`
//! set to a folder, the layout tests save screenshots there.

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
    /// Emulates a screen `width` × `height` CSS pixels large; under 700 a
    /// phone's (touch, the page's viewport meta honoured). Headless Chromium
    /// makes no window narrower than 500 px, so the size is emulated.
    async fn viewport(&self, width: u32, height: u32) {
        let mobile = width < 700;
        let scale = if mobile { 2 } else { 1 };
        self.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride", "params": {
                "width": width, "height": height, "mobile": mobile, "deviceScaleFactor": scale,
            }}),
        )
        .await;
    }

    /// Asserts that the page does not scroll sideways at `width` and that
    /// every button lies within it. A phone's viewport widens itself to a
    /// wider page, so the page is measured against `width`, not innerWidth.
    async fn fits(&self, what: &str, width: u32) {
        let measured = self
            .script(
                "const width = arguments[0]; \
                 const outside = (element) => { const box = element.getBoundingClientRect(); \
                   return box.width > 0 && (box.left < -0.5 || box.right > width + 0.5); }; \
                 const name = (element) => element.tagName.toLowerCase() \
                   + (element.id ? '#' + element.id : '') \
                   + (typeof element.className === 'string' && element.className \
                      ? '.' + element.className.trim().split(/\\s+/).join('.') : ''); \
                 return { scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth, \
                   buttons: Array.from(document.querySelectorAll('button')).filter(outside).map(name), \
                   outside: Array.from(document.querySelectorAll('body *')).filter(outside).slice(0, 10).map(name) };",
                json!([width]),
            )
            .await;
        let scroll_width = measured["scrollWidth"].as_u64().unwrap();
        assert!(
            measured["innerWidth"] == width
                && scroll_width <= u64::from(width)
                && measured["buttons"] == json!([]),
            "{what} does not fit {width} px: {measured}"
        );
    }

    /// Saves the viewport as `<name>.png` in `CORRAL_SCREENSHOTS`, if set.
    async fn screenshot(&self, name: &str) {
        let Some(folder) = std::env::var_os("CORRAL_SCREENSHOTS") else {
            return;
        };
        let png = self
            .call(reqwest::Method::GET, "/screenshot", json!({}))
            .await;
        let folder = std::path::PathBuf::from(folder);
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(
            folder.join(format!("{name}.png")),
            base64_decode(png.as_str().unwrap()),
        )
        .unwrap();
    }

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

/// Standard base64 (a WebDriver screenshot) to bytes.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |digit: u8| -> u32 {
        match digit {
            b'A'..=b'Z' => u32::from(digit - b'A'),
            b'a'..=b'z' => u32::from(digit - b'a') + 26,
            b'0'..=b'9' => u32::from(digit - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|digit| *digit != b'=' && !digit.is_ascii_whitespace())
        .collect();
    let mut bytes = Vec::with_capacity(digits.len() / 4 * 3 + 2);
    for group in digits.chunks(4) {
        let bits = group.iter().enumerate().fold(0u32, |bits, (index, digit)| {
            bits | (value(*digit) << (18 - 6 * index))
        });
        // Two digits make one byte, three two, four three.
        for index in 0..group.len() - 1 {
            bytes.push(bits.to_be_bytes()[1 + index]);
        }
    }
    bytes
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_the_api_docs_fit_a_phone_and_a_desktop() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral.wait_for_plugins(&["hello-world@v0-2-1"]).await;
    let task_url = corral
        .submit(
            "hello-world@v0-2-1",
            &[(
                "inputStr",
                "an input long enough to wrap on a phone's screen",
            )],
        )
        .await;
    corral.finished(&task_url).await;
    let task_id = common::serve::task_id(&task_url);

    let driver = Driver::start().await;
    for (width, height) in [(390, 844), (1280, 800)] {
        driver.viewport(width, height).await;
        // The operator token in the address: the page keeps it and shows the tasks.
        driver
            .open(&corral.url(&format!("/dashboard/?token={}", common::ADMIN_TOKEN)))
            .await;
        driver
            .until(
                "the dashboard with its tasks",
                &format!(
                    "return document.body.dataset.loaded === 'true' \
                       && document.querySelector('#tasks tr[data-task=\"{task_id}\"]') !== null;"
                ),
            )
            .await;
        driver.fits("the dashboard", width).await;
        driver
            .screenshot(&format!("dashboard-{width}x{height}"))
            .await;

        driver
            .open(&corral.url(&format!("/dashboard/#task={task_id}")))
            .await;
        driver
            .until(
                "the task's detail",
                "return document.getElementById('task-log').textContent.includes('result:');",
            )
            .await;
        driver.fits("a task's detail", width).await;
        driver
            .screenshot(&format!("dashboard-task-{width}x{height}"))
            .await;

        // Every operation open: their tables and examples are the widest parts.
        driver.open(&corral.url("/api-docs/")).await;
        let operations = driver
            .until(
                "the API docs",
                "const count = document.querySelectorAll('.opblock-summary-control').length; \
                 return count > 0 ? count : null;",
            )
            .await;
        driver
            .script(
                "document.querySelectorAll('.opblock-summary-control').forEach((control) => control.click());",
                json!([]),
            )
            .await;
        driver
            .until(
                "every operation open",
                &format!(
                    "return document.querySelectorAll('.opblock.is-open').length === {operations};"
                ),
            )
            .await;
        driver.fits("the API docs", width).await;
        driver
            .screenshot(&format!("api-docs-{width}x{height}"))
            .await;
    }
    driver.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_page_on_its_own_shows_its_task_or_its_errors() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral.wait_for_plugins(&["hello-world@v0-2-1"]).await;
    let form = corral.url("/plugins/hello-world@v0-2-1/ui/");

    let driver = Driver::start().await;
    driver.viewport(390, 844).await;
    driver.open(&form).await;
    driver.fits("the form page", 390).await;
    driver
        .script(
            "document.getElementById('inputStr').value = arguments[0];",
            json!(["my input"]),
        )
        .await;
    driver.click("button[type=submit]").await;
    // Not in qhana-ui's iframe: the page shows the task it started, until it ends.
    let link = driver
        .until(
            "the task's link",
            "const link = document.querySelector('#form-result a.task-link'); return link && link.href;",
        )
        .await;
    assert!(
        link.as_str().unwrap().starts_with(&corral.url("/tasks/")),
        "{link}"
    );
    let status = driver
        .until(
            "the task's end",
            "const status = document.querySelector('#form-result .task-status'); \
             return status && !['PENDING', '…'].includes(status.textContent) ? status.textContent : null;",
        )
        .await;
    assert_eq!(status, "SUCCESS");
    let log = driver
        .script(
            "return document.querySelector('#form-result .task-log').textContent;",
            json!([]),
        )
        .await;
    assert!(
        log.as_str().unwrap().contains("result: 'my output'"),
        "{log}"
    );
    driver.fits("the form page with its task", 390).await;
    driver.screenshot("form-task-390x844").await;

    // Nothing given: the message beside the required field, and a summary.
    driver.open(&form).await;
    driver.click("button[type=submit]").await;
    let message = driver
        .until(
            "the field's error",
            "const error = document.querySelector('.field.invalid .error'); return error && error.textContent;",
        )
        .await;
    assert_eq!(message, "Missing data for required field.");
    let summary = driver
        .script(
            "return document.getElementById('form-result').textContent;",
            json!([]),
        )
        .await;
    assert!(
        summary
            .as_str()
            .unwrap()
            .contains("Input String: Missing data for required field."),
        "{summary}"
    );
    driver.fits("the form page with its errors", 390).await;
    driver.screenshot("form-invalid-390x844").await;
    driver.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tasks_panel_filters_shows_retries_and_cancels_tasks() {
    let database = TestDatabase::new(Db::Sqlite).await;
    let corral = Corral::serve(&database, &[&plugins()]);
    corral
        .wait_for_plugins(&["hello-world@v0-2-1", "hello-world-multi-step@v0-2-1"])
        .await;
    let done_url = corral
        .submit("hello-world@v0-2-1", &[("inputStr", "shown")])
        .await;
    corral.finished(&done_url).await;
    let done_id = common::serve::task_id(&done_url);
    let waiting_url = corral
        .submit("hello-world-multi-step@v0-2-1", &[("inputStr", "waits")])
        .await;
    corral.wait_for_step(&waiting_url).await;
    let waiting_id = common::serve::task_id(&waiting_url);

    let driver = Driver::start().await;
    driver.viewport(390, 844).await;
    // The operator token in the address is kept for the session and taken
    // out of the address bar.
    driver
        .open(&corral.url(&format!("/dashboard/?token={}", common::ADMIN_TOKEN)))
        .await;
    driver
        .until(
            "the page loaded its data",
            "return document.body.dataset.loaded === 'true';",
        )
        .await;
    let kept = driver
        .script(
            "return [location.search, document.getElementById('token').value, \
               sessionStorage.getItem('corral-token')];",
            json!([]),
        )
        .await;
    assert_eq!(kept, json!(["", common::ADMIN_TOKEN, common::ADMIN_TOKEN]));

    // Filtered by plugin: hello-world's task only.
    driver
        .script(
            "document.getElementById('filter-plugin').value = arguments[0];",
            json!(["hello-world@v0-2-1"]),
        )
        .await;
    driver.click("#filter-apply").await;
    let listed = driver
        .until(
            "the filtered list",
            "const plugins = Array.from(document.querySelectorAll('#tasks tbody td.plugin')).map((td) => td.textContent); \
             return plugins.length > 0 && plugins.every((plugin) => plugin === 'hello-world@v0-2-1') \
               ? Array.from(document.querySelectorAll('#tasks tbody tr')).map((row) => row.dataset.task) : null;",
        )
        .await;
    assert_eq!(listed, json!([done_id]));

    // Its detail: it has ended, so it can be retried, not cancelled.
    driver
        .click(&format!("#tasks tr[data-task=\"{done_id}\"] a"))
        .await;
    let log = driver
        .until(
            "the task's log",
            "const log = document.getElementById('task-log').textContent; return log.includes('result:') ? log : null;",
        )
        .await;
    assert!(log.as_str().unwrap().contains("result: 'shown'"), "{log}");
    let shown = driver
        .script(
            "const value = (name) => document.querySelector('#task-fields [data-field=\"' + name + '\"] dd').textContent; \
             return [location.hash, value('status'), value('plugin'), document.querySelector('#task-inputs td').textContent, \
               document.getElementById('task-cancel').hidden, document.getElementById('task-retry').hidden];",
            json!([]),
        )
        .await;
    assert_eq!(
        shown,
        json!([
            format!("#task={done_id}"),
            "SUCCESS",
            "hello-world@v0-2-1",
            "shown",
            true,
            false
        ])
    );
    driver.fits("a task's detail", 390).await;
    driver.screenshot("tasks-detail-390x844").await;

    // Retried: a new task with the same inputs, linked from the old one.
    driver.click("#task-retry").await;
    let notice = driver
        .until(
            "the retry reported",
            "const text = document.getElementById('notice').textContent; \
             return text.startsWith('Retried') ? text : null;",
        )
        .await;
    let retry_id = driver
        .script(
            "return document.querySelector('#notice a').textContent;",
            json!([]),
        )
        .await;
    let retry_id = retry_id.as_str().unwrap().to_owned();
    assert_eq!(notice, format!("Retried task {done_id} as {retry_id}."));
    driver
        .until(
            "the retry listed with the retried task",
            &format!(
                "return document.querySelector('#task-fields [data-field=\"retries\"] dd').textContent === '{retry_id}';"
            ),
        )
        .await;
    let retried = corral
        .finished(&corral.url(&format!("/tasks/{retry_id}/")))
        .await;
    assert_eq!(retried["status"], "SUCCESS");

    // Cancelled while it waits for its step: it ends FAILURE, its log says by whom.
    driver
        .script(
            "location.hash = '#task=' + arguments[0];",
            json!([waiting_id]),
        )
        .await;
    driver
        .until(
            "the waiting task",
            "const value = (name) => { const field = document.querySelector('#task-fields [data-field=\"' + name + '\"] dd'); \
               return field && field.textContent; }; \
             return value('status') === 'PENDING' && value('phase') === 'waiting' \
               && !document.getElementById('task-cancel').hidden;",
        )
        .await;
    driver.click("#task-cancel").await;
    let notice = driver
        .until(
            "the cancel reported",
            "const text = document.getElementById('notice').textContent; \
             return text.startsWith('Cancelled') ? text : null;",
        )
        .await;
    assert_eq!(notice, format!("Cancelled task {waiting_id}: FAILURE."));
    driver
        .until(
            "the cancelled task's log",
            "return document.getElementById('task-log').textContent.includes('cancelled by');",
        )
        .await;
    let (_, status) = corral.get_json(&format!("/tasks/{waiting_id}/")).await;
    assert_eq!(status["status"], "FAILURE");
    assert!(
        status["log"].as_str().unwrap().contains("cancelled by"),
        "{status}"
    );
    driver.quit().await;
}
