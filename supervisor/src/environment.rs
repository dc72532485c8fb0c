//! Plugin environments. A plugin whose manifest says `environment = "uv"`
//! declares its Python requirements in its folder (`pyproject.toml` and a
//! committed `uv.lock`); before each start the supervisor makes sure the folder's
//! `.venv` holds exactly that lock, building it with `uv sync --frozen` when the
//! requirements changed. An unchanged plugin costs two small file reads.
//!
//! uv is found through `CORRAL_UV`, else as `uv` beside the `corral` binary or on
//! `PATH`. It never downloads an interpreter (`UV_PYTHON_DOWNLOADS=never` unless
//! the operator set it): it uses the machine's Python.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

/// How a plugin's environment is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentKind {
    /// The plugin brings what it runs (a binary, or an environment made by hand).
    #[default]
    None,
    /// `.venv` built by uv from `pyproject.toml` and `uv.lock`.
    Uv,
}

/// The environment's folder inside the plugin folder.
pub const VENV: &str = ".venv";
/// What the last successful build was made from, inside [`VENV`].
const STAMP: &str = ".corral-environment";
/// The files that decide an environment's contents.
const INPUTS: [&str; 2] = ["pyproject.toml", "uv.lock"];
/// Changes whenever the way environments are built changes.
const RECIPE: &str = "uv sync --frozen; v1";

/// What [`prepare`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// The environment already matched its lock.
    UpToDate,
    /// It was built, taking this long.
    Built(Duration),
}

/// Makes `folder`'s environment match its lock, building it if needed. Every
/// line the installer prints goes to `on_line`. The error is one line saying what
/// failed (the installer's own lines went to `on_line` before it).
pub async fn prepare(
    folder: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(String) + Send,
) -> Result<Prepared, String> {
    let key = inputs_key(folder).await?;
    let stamp = folder.join(VENV).join(STAMP);
    let python = folder.join(VENV).join("bin/python");
    if tokio::fs::try_exists(&python).await.unwrap_or(false)
        && tokio::fs::read_to_string(&stamp).await.ok().as_deref() == Some(key.as_str())
    {
        return Ok(Prepared::UpToDate);
    }
    // A build that fails half way must never look up to date.
    let _absent_is_fine = tokio::fs::remove_file(&stamp).await;
    let uv = find_uv()?;
    on_line(format!(
        "building the environment: {} sync --frozen",
        uv.display()
    ));
    let started = Instant::now();
    let mut command = Command::new(&uv);
    command
        .args(["sync", "--frozen", "--no-progress", "--color", "never"])
        .current_dir(folder)
        .env_remove("VIRTUAL_ENV")
        .env_remove("UV_PROJECT_ENVIRONMENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: a timeout or an abort ends what uv started too.
        .process_group(0)
        .kill_on_drop(true);
    if std::env::var_os("UV_PYTHON_DOWNLOADS").is_none() {
        command.env("UV_PYTHON_DOWNLOADS", "never");
    }
    let mut child = command
        .spawn()
        .map_err(|error| format!("failed to run {}: {error}", uv.display()))?;
    let mut group = GroupGuard(child.id());
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err("the installer's output could not be captured".into());
    };
    let (mut stdout, mut stderr) = (BufReader::new(stdout), BufReader::new(stderr));
    let run = async {
        let (mut out_open, mut err_open) = (true, true);
        let (mut out_line, mut err_line) = (Vec::new(), Vec::new());
        let mut last = String::new();
        while out_open || err_open {
            // Bytes, not text: a line that is not UTF-8 must not stop the reading
            // (uv would then block on a full pipe).
            let (line, from_stdout) = tokio::select! {
                line = read_line(&mut stdout, &mut out_line), if out_open => (line, true),
                line = read_line(&mut stderr, &mut err_line), if err_open => (line, false),
            };
            match line {
                Some(line) => {
                    if !line.trim().is_empty() {
                        last.clone_from(&line);
                    }
                    on_line(line);
                }
                None if from_stdout => out_open = false,
                None => err_open = false,
            }
        }
        (child.wait().await, last)
    };
    let (status, last) = tokio::time::timeout(timeout, run).await.map_err(|_| {
        format!(
            "the environment was not built within {}",
            humantime::format_duration(timeout)
        )
    })?;
    // uv is gone and waited for: its group needs no kill (its id may be reused).
    group.0 = None;
    let status = status.map_err(|error| format!("uv failed: {error}"))?;
    if !status.success() {
        return Err(format!("uv sync failed ({status}): {last}"));
    }
    tokio::fs::write(&stamp, key)
        .await
        .map_err(|error| format!("failed to write {}: {error}", stamp.display()))?;
    Ok(Prepared::Built(started.elapsed()))
}

/// The next line of `reader` (lossily decoded, without its end); `None` at the
/// end of the output or when it cannot be read.
async fn read_line(
    reader: &mut (impl AsyncBufReadExt + Unpin),
    buffer: &mut Vec<u8>,
) -> Option<String> {
    buffer.clear();
    match reader.read_until(b'\n', buffer).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            let line = buffer.strip_suffix(b"\n").unwrap_or(buffer);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            Some(String::from_utf8_lossy(line).into_owned())
        }
    }
}

/// Kills the installer's process group when a build is abandoned (timeout,
/// abort): what uv started goes with it.
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|pid| i32::try_from(pid).ok()) {
            let _gone_is_fine = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A digest of what decides the environment. A missing lock is an error: an
/// environment must be reproducible.
async fn inputs_key(folder: &Path) -> Result<String, String> {
    let mut hash = Fnv64::new();
    hash.write(RECIPE.as_bytes());
    for name in INPUTS {
        let path = folder.join(name);
        let contents = tokio::fs::read(&path)
            .await
            .map_err(|error| match error.kind() {
                std::io::ErrorKind::NotFound if name == "uv.lock" => format!(
                    "{} is missing: run `uv lock` in {} and commit it",
                    path.display(),
                    folder.display()
                ),
                _ => format!("failed to read {}: {error}", path.display()),
            })?;
        hash.write(&(contents.len() as u64).to_le_bytes());
        hash.write(&contents);
    }
    Ok(format!("{:016x}\n", hash.finish()))
}

/// uv, from `CORRAL_UV`, beside the `corral` binary, or on `PATH`.
fn find_uv() -> Result<PathBuf, String> {
    if let Some(uv) = std::env::var_os("CORRAL_UV") {
        return Ok(PathBuf::from(uv));
    }
    crate::spawn::find_program("uv").ok_or_else(|| {
        "uv not found beside the corral binary or on PATH: install it \
         (`pip install uv`) or point CORRAL_UV at it"
            .into()
    })
}

/// FNV-1a, 64 bits: a stable digest for a cache key (not for security).
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_that_are_not_utf8_are_read_and_the_reading_goes_on() {
        let mut reader = BufReader::new(&b"ok\r\n\xff\xfe bad\nlast"[..]);
        let mut buffer = Vec::new();
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, &mut buffer).await {
            lines.push(line);
        }
        assert_eq!(lines, ["ok", "\u{fffd}\u{fffd} bad", "last"]);
    }

    #[tokio::test]
    async fn the_key_follows_the_lock_and_a_missing_lock_is_named() {
        let folder = tempfile::tempdir().expect("temp dir");
        std::fs::write(folder.path().join("pyproject.toml"), "[project]\n").expect("write");
        let missing = inputs_key(folder.path()).await.expect_err("no lock");
        assert!(missing.contains("uv.lock is missing"), "{missing}");
        std::fs::write(folder.path().join("uv.lock"), "version = 1\n").expect("write");
        let first = inputs_key(folder.path()).await.expect("key");
        assert_eq!(first, inputs_key(folder.path()).await.expect("key"));
        std::fs::write(folder.path().join("uv.lock"), "version = 2\n").expect("write");
        assert_ne!(first, inputs_key(folder.path()).await.expect("key"));
    }
}
