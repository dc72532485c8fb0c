//! The one place that creates plugin processes, and the one that signals them.
//!
//! Every plugin runs in its own process group (so a stop reaches whatever it
//! forked), with a scrubbed environment, and with the parent-death signal set to
//! SIGKILL so it cannot outlive a supervisor that is itself killed with SIGKILL.
//!
//! The parent-death signal fires when the *thread* that forked exits. Plugins are
//! spawned from the tasks of the multi-threaded tokio runtime, whose worker threads
//! live as long as the runtime (unlike `spawn_blocking` threads, which must never
//! call [`spawn`]).

use std::{
    io,
    path::{Path, PathBuf},
    process::Stdio,
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::{Child, Command};

use crate::{
    confine::{Confinement, PluginUser},
    manifest::Limits,
};

/// What to run, fully resolved.
#[derive(Debug)]
pub(crate) struct SpawnSpec<'a> {
    pub(crate) program: &'a Path,
    pub(crate) args: &'a [String],
    pub(crate) working_dir: &'a Path,
    /// The complete environment of the child; nothing else is inherited.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) limits: &'a Limits,
    /// Run through `corral confine` with these paths; `None`: unconfined.
    pub(crate) confinement: Option<&'a Confinement>,
    /// Run as this user (and its primary group, no other groups).
    pub(crate) user: Option<PluginUser>,
}

/// Spawns the plugin process as the leader of a new process group, with stdin
/// closed and stdout/stderr piped.
pub(crate) fn spawn(spec: &SpawnSpec<'_>) -> io::Result<Child> {
    let mut command = match spec.confinement {
        // `corral confine` restricts itself, then becomes the plugin (same pid).
        Some(confinement) => {
            let mut command = Command::new(std::env::current_exe()?);
            command
                .arg("confine")
                .args(confinement.arguments())
                .arg("--")
                .arg(spec.program);
            command
        }
        None => Command::new(spec.program),
    };
    command
        .args(spec.args)
        .current_dir(spec.working_dir)
        .env_clear()
        .envs(spec.env.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = spec.user {
        // The standard library drops the supplementary groups with them.
        command.uid(user.uid).gid(user.gid);
    }
    let limits = rlimits(spec.limits);
    let supervisor_pid = nix::unistd::getpid();
    // SAFETY: the closure runs in the forked child before exec; it only makes
    // async-signal-safe system calls (prctl, getppid, setrlimit) and allocates
    // nothing: `limits` was built before the fork.
    #[expect(
        unsafe_code,
        reason = "the parent-death signal and rlimits need pre_exec"
    )]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The supervisor may have died between fork and prctl.
            if nix::unistd::getppid() != supervisor_pid {
                return Err(io::Error::from_raw_os_error(
                    nix::errno::Errno::ESRCH as i32,
                ));
            }
            for (resource, value) in limits.iter().flatten() {
                nix::sys::resource::setrlimit(*resource, *value, *value)?;
            }
            Ok(())
        });
    }
    command.spawn()
}

type Rlimit = Option<(nix::sys::resource::Resource, u64)>;

fn rlimits(limits: &Limits) -> [Rlimit; 5] {
    use nix::sys::resource::Resource;
    const MIB: u64 = 1024 * 1024;
    [
        limits
            .address_space_mb
            .map(|mb| (Resource::RLIMIT_AS, mb.saturating_mul(MIB))),
        limits.open_files.map(|n| (Resource::RLIMIT_NOFILE, n)),
        limits.processes.map(|n| (Resource::RLIMIT_NPROC, n)),
        limits.cpu_seconds.map(|s| (Resource::RLIMIT_CPU, s)),
        limits
            .file_size_mb
            .map(|mb| (Resource::RLIMIT_FSIZE, mb.saturating_mul(MIB))),
    ]
}

/// Sends `signal` to every process of the group led by `pid`. A group that is
/// already gone is not an error: stopping is idempotent.
pub(crate) fn signal_group(pid: u32, signal: Signal) {
    // 0 and 1 would signal our own group or every process we may signal.
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if raw <= 1 {
        return;
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(error) => tracing::warn!(pid, %signal, %error, "failed to signal process group"),
    }
}

/// Resolves a manifest's `command`: absolute as is; with a `/`, relative to the
/// plugin folder; a bare name is looked up in the plugin folder, then as
/// [`find_program`] does.
pub(crate) fn resolve_program(command: &str, plugin_folder: &Path) -> Result<PathBuf, String> {
    let path = Path::new(command);
    if path.is_absolute() {
        return Ok(path.to_owned());
    }
    if command.contains('/') {
        return Ok(plugin_folder.join(path));
    }
    let in_folder = plugin_folder.join(command);
    if in_folder.is_file() {
        return Ok(in_folder);
    }
    find_program(command).ok_or_else(|| {
        format!(
            "command `{command}` not found in {}, beside the corral binary, or on PATH",
            plugin_folder.display()
        )
    })
}

/// A program `name` beside the running `corral` binary, else on `PATH`.
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let beside_binary = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned));
    let path_dirs = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    beside_binary
        .into_iter()
        .chain(path_dirs)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
