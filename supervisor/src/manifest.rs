//! Plugin manifests (`plugin.toml`): what to run, how to restart it, its limits.
//!
//! Every key is documented in the README's "Plugin manifest" section; keep the two
//! in step. Unknown keys are errors, so a typo never becomes a silent default.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::environment::EnvironmentKind;

/// The longest duration a manifest may give (so deadlines never overflow).
const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// The manifest's file name inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// A parsed and validated manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The program to run: a path relative to the plugin folder, an absolute path,
    /// or a bare name looked up in the plugin folder, beside the `corral` binary,
    /// then on the supervisor's `PATH`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// The working directory, relative to the plugin folder (default: the folder).
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    /// Variables set for the plugin, by name.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of the supervisor's own variables passed through to the plugin.
    #[serde(default)]
    pub env_allow: Vec<String>,
    /// Whether the plugin's tasks may be run again after the plugin crashed.
    #[serde(default)]
    pub retry_safe: bool,
    /// Whether the plugin may read `file://localhost` data URLs.
    #[serde(default)]
    pub allow_file_urls: bool,
    /// Paths (relative to the plugin folder, or absolute) the confined plugin
    /// may also read, beyond its folder and the system's libraries.
    #[serde(default)]
    pub allow_read: Vec<PathBuf>,
    /// Paths the confined plugin may also write.
    #[serde(default)]
    pub allow_write: Vec<PathBuf>,
    /// How many lines of stdout/stderr the supervisor keeps for the logs stream.
    #[serde(default = "default_log_lines")]
    pub log_lines: usize,
    /// When to restart and how fast.
    #[serde(default)]
    pub restart: RestartConfig,
    /// Start, stop and health-check timing.
    #[serde(default)]
    pub health: HealthConfig,
    /// Deadline from spawn to registered and healthy.
    #[serde(default = "default_start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when stopping.
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// Resource limits (rlimits) set in the child before it runs.
    #[serde(default)]
    pub limits: Limits,
    /// Who makes the plugin's environment: `"uv"` builds `.venv` from the
    /// folder's `pyproject.toml` and `uv.lock` before the plugin starts.
    #[serde(default)]
    pub environment: EnvironmentKind,
    /// Deadline of one environment build (not counted in `start_timeout`).
    #[serde(default = "default_environment_timeout", with = "humantime_serde")]
    pub environment_timeout: Duration,
}

fn default_environment_timeout() -> Duration {
    Duration::from_secs(15 * 60)
}

/// When a plugin that ended is started again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// Always restarted, whatever the exit.
    #[default]
    Permanent,
    /// Restarted only after an abnormal end (non-zero code, signal, failed health).
    Transient,
    /// Never restarted.
    Temporary,
}

/// The `[restart]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestartConfig {
    /// See [`RestartPolicy`].
    pub policy: RestartPolicy,
    /// The first delay before a restart; doubles with each restart.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// The longest delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Random spread of each delay, as a fraction of it (0 to 1).
    pub backoff_jitter: f64,
    /// More restarts than this within `restart_window` mark the plugin failed.
    pub max_restarts: u32,
    /// The window `max_restarts` counts over.
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
}

impl Default for RestartConfig {
    fn default() -> Self {
        Self {
            policy: RestartPolicy::Permanent,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            backoff_jitter: 0.2,
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
        }
    }
}

/// The `[health]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Time between two checks of a ready plugin.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Deadline of one check.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failed checks after which the plugin is restarted.
    pub failures: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            failures: 3,
        }
    }
}

/// The `[limits]` table: rlimits applied to the plugin process.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// RLIMIT_AS, in MiB.
    pub address_space_mb: Option<u64>,
    /// RLIMIT_NOFILE.
    pub open_files: Option<u64>,
    /// RLIMIT_NPROC (counted per user, not per plugin).
    pub processes: Option<u64>,
    /// RLIMIT_CPU, in seconds of CPU time.
    pub cpu_seconds: Option<u64>,
    /// RLIMIT_FSIZE, in MiB.
    pub file_size_mb: Option<u64>,
}

fn default_log_lines() -> usize {
    1000
}

fn default_start_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_stop_grace() -> Duration {
    Duration::from_secs(5)
}

/// A manifest that could not be used, naming its file and, where known, the field.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("invalid manifest {}: {message}", path.display())]
    Parse {
        /// The manifest file.
        path: PathBuf,
        /// The parser's message (it names the key, line and column).
        message: String,
    },
    /// A value is of the right type but not allowed.
    #[error("invalid manifest {}: field `{field}`: {message}", path.display())]
    Invalid {
        /// The manifest file.
        path: PathBuf,
        /// The dotted key, e.g. `restart.backoff_jitter`.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Two plugin folders share a name.
    #[error("plugin folder {} has the same name as {}", path.display(), other.display())]
    DuplicateName {
        /// The folder that was refused.
        path: PathBuf,
        /// The folder that has the name.
        other: PathBuf,
    },
}

impl Manifest {
    /// Reads and validates `plugin.toml` at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses and validates manifest text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|error| ManifestError::Parse {
            path: path.to_owned(),
            message: error.to_string().trim_end().replace('\n', " "),
        })?;
        manifest.validate(path)?;
        Ok(manifest)
    }

    fn validate(&self, path: &Path) -> Result<(), ManifestError> {
        let invalid = |field: &'static str, message: &str| ManifestError::Invalid {
            path: path.to_owned(),
            field,
            message: message.to_owned(),
        };
        if self.command.trim().is_empty() {
            return Err(invalid("command", "must not be empty"));
        }
        if !(0.0..=1.0).contains(&self.restart.backoff_jitter) {
            return Err(invalid("restart.backoff_jitter", "must be between 0 and 1"));
        }
        if self.restart.backoff_max < self.restart.backoff_initial {
            return Err(invalid(
                "restart.backoff_max",
                "must not be less than restart.backoff_initial",
            ));
        }
        if self.restart.restart_window.is_zero() {
            return Err(invalid("restart.restart_window", "must be more than 0"));
        }
        if self.health.interval.is_zero() {
            return Err(invalid("health.interval", "must be more than 0"));
        }
        if self.health.timeout.is_zero() || self.health.timeout > self.health.interval {
            return Err(invalid(
                "health.timeout",
                "must be more than 0 and at most health.interval",
            ));
        }
        if self.health.failures == 0 {
            return Err(invalid("health.failures", "must be at least 1"));
        }
        if self.start_timeout.is_zero() {
            return Err(invalid("start_timeout", "must be more than 0"));
        }
        if self.environment_timeout.is_zero() {
            return Err(invalid("environment_timeout", "must be more than 0"));
        }
        let durations = [
            ("start_timeout", self.start_timeout),
            ("environment_timeout", self.environment_timeout),
            ("stop_grace", self.stop_grace),
            ("restart.backoff_initial", self.restart.backoff_initial),
            ("restart.backoff_max", self.restart.backoff_max),
            ("restart.restart_window", self.restart.restart_window),
            ("health.interval", self.health.interval),
            ("health.timeout", self.health.timeout),
        ];
        if let Some((field, _)) = durations
            .iter()
            .find(|(_, duration)| *duration > MAX_DURATION)
        {
            return Err(invalid(field, "must be at most 7 days"));
        }
        if self.log_lines == 0 || self.log_lines > 1_000_000 {
            return Err(invalid("log_lines", "must be between 1 and 1000000"));
        }
        if let Some(name) = self.env.keys().find(|name| reserved_variable(name)) {
            return Err(invalid(
                "env",
                &format!("{name} is set by the supervisor and cannot be overridden"),
            ));
        }
        if let Some(name) = self.env_allow.iter().find(|name| reserved_variable(name)) {
            return Err(invalid(
                "env_allow",
                &format!("{name} is set by the supervisor and cannot be passed through"),
            ));
        }
        Ok(())
    }
}

fn reserved_variable(name: &str) -> bool {
    name.starts_with("CORRAL_")
}

/// One plugin folder found on disk: its name and its manifest, or why it is unusable.
#[derive(Debug)]
pub struct Discovered {
    /// The folder's name: the plugin's name in the admin API.
    pub name: String,
    /// The folder.
    pub folder: PathBuf,
    /// The manifest, or the error that names its file and field.
    pub manifest: Result<Manifest, ManifestError>,
}

/// Finds the plugin folders: the direct subfolders of each of `roots` that hold a
/// `plugin.toml`, in the order of `roots`, then by name. A root that does not
/// exist is an error; a subfolder without a manifest is not a plugin.
pub fn discover(roots: &[PathBuf]) -> std::io::Result<Vec<Discovered>> {
    let mut found: Vec<Discovered> = Vec::new();
    for root in roots {
        let mut folders = Vec::new();
        for entry in std::fs::read_dir(root)
            .map_err(|error| with_path(error, "failed to read plugin folder", root))?
        {
            let entry = entry?;
            // Absolute, so a relative command still resolves after the child's chdir.
            let folder = std::path::absolute(entry.path())?;
            if folder.join(MANIFEST_FILE).is_file() {
                folders.push(folder);
            }
        }
        folders.sort();
        for folder in folders {
            let name = folder
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();
            let manifest_path = folder.join(MANIFEST_FILE);
            let manifest = match found.iter().find(|other| other.name == name) {
                Some(other) => Err(ManifestError::DuplicateName {
                    path: folder.clone(),
                    other: other.folder.clone(),
                }),
                None => Manifest::load(&manifest_path),
            };
            found.push(Discovered {
                name,
                folder,
                manifest,
            });
        }
    }
    Ok(found)
}

fn with_path(error: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(Path::new("demo/plugin.toml"), text)
    }

    #[test]
    fn minimal_manifest_takes_the_documented_defaults() {
        let manifest = parse("command = \"demo\"").expect("valid");
        assert_eq!(manifest.restart.policy, RestartPolicy::Permanent);
        assert_eq!(manifest.start_timeout, Duration::from_secs(10));
        assert_eq!(manifest.stop_grace, Duration::from_secs(5));
        assert_eq!(manifest.health.failures, 3);
        assert_eq!(manifest.restart.max_restarts, 5);
        assert_eq!(manifest.log_lines, 1000);
    }

    #[test]
    fn full_manifest_parses_every_key() {
        let manifest = parse(
            r#"
            command = "bin/plugin"
            args = ["--fast"]
            working_dir = "work"
            env_allow = ["RUST_LOG"]
            retry_safe = true
            allow_file_urls = true
            log_lines = 50
            start_timeout = "2s"
            stop_grace = "500ms"
            [env]
            GREETING = "hi"
            [restart]
            policy = "transient"
            backoff_initial = "0s"
            backoff_max = "1s"
            backoff_jitter = 0.0
            max_restarts = 2
            restart_window = "10s"
            [health]
            interval = "1s"
            timeout = "100ms"
            failures = 2
            [limits]
            address_space_mb = 1024
            open_files = 256
            processes = 64
            cpu_seconds = 60
            file_size_mb = 100
            "#,
        )
        .expect("valid");
        assert_eq!(manifest.restart.policy, RestartPolicy::Transient);
        assert_eq!(manifest.stop_grace, Duration::from_millis(500));
        assert_eq!(manifest.limits.open_files, Some(256));
        assert_eq!(manifest.env["GREETING"], "hi");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let error = parse("command = \"demo\"\ncomand = \"x\"").expect_err("typo");
        let text = error.to_string();
        assert!(text.contains("demo/plugin.toml"), "{text}");
        assert!(text.contains("comand"), "{text}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            ("command = \"\"", "command"),
            (
                "command = \"x\"\n[restart]\nbackoff_jitter = 2.0",
                "restart.backoff_jitter",
            ),
            ("command = \"x\"\n[health]\nfailures = 0", "health.failures"),
            ("command = \"x\"\n[env]\nCORRAL_PLUGIN_TOKEN = \"x\"", "env"),
        ];
        for (text, field) in cases {
            let error = parse(text).expect_err(text);
            assert!(
                error.to_string().contains(&format!("`{field}`")),
                "{text}: {error}"
            );
        }
    }

    #[test]
    fn wrong_type_and_bad_duration_are_parse_errors() {
        let error = parse("command = \"x\"\nstart_timeout = \"soon\"").expect_err("bad");
        assert!(error.to_string().contains("start_timeout"), "{error}");
        let error = parse("command = 3").expect_err("bad");
        assert!(error.to_string().contains("command"), "{error}");
    }
}

/// Property tests: any text is a manifest or one clear error, never a panic.
#[cfg(test)]
mod properties {
    use std::path::Path;

    use proptest::prelude::*;

    use super::Manifest;

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,12}".prop_map(|text| format!("{text:?}")),
            any::<i64>().prop_map(|number| number.to_string()),
            any::<bool>().prop_map(|flag| flag.to_string()),
            Just("\"0s\"".to_owned()),
            Just("\"1h\"".to_owned()),
            Just("[\"a\", \"b\"]".to_owned()),
        ]
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_one_error(text in "\\PC{0,300}") {
            if let Err(error) = Manifest::parse(Path::new("plugin.toml"), &text) {
                prop_assert!(!error.to_string().is_empty());
            }
        }

        #[test]
        fn known_keys_with_any_values_parse_or_are_one_error(
            pairs in proptest::collection::vec((prop_oneof![
                Just("command"), Just("args"), Just("working_dir"), Just("retry_safe"),
                Just("allow_file_urls"), Just("log_lines"), Just("start_timeout"),
                Just("stop_grace"), Just("environment"), Just("environment_timeout"),
                Just("env_allow"),
            ], value()), 0..8)
        ) {
            let mut seen = std::collections::BTreeSet::new();
            let text: String = pairs
                .into_iter()
                .filter(|(key, _)| seen.insert(*key))
                .map(|(key, value)| format!("{key} = {value}\n"))
                .collect();
            if let Err(error) = Manifest::parse(Path::new("plugin.toml"), &text) {
                prop_assert!(error.to_string().contains("plugin.toml"), "{error}");
            }
        }
    }
}
