//! Plugin confinement with Landlock. A plugin process sees its own folder (with
//! its environment), the system's libraries and a private temporary folder, and
//! nothing else of the file system: not the database, the file store, another
//! plugin's folder or Corral's configuration. It cannot signal processes outside
//! its sandbox (the supervisor, other plugins).
//!
//! The supervisor does not restrict itself: it spawns `corral confine` with the
//! plugin's [`Confinement`] as arguments; that process sets `no_new_privs`,
//! restricts itself with [`Confinement::enforce`] and then `exec`s the plugin,
//! which keeps the restrictions (Landlock domains survive `execve`, and so does
//! the process id the supervisor watches). No code runs between fork and exec.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetError, RulesetStatus, Scope, path_beneath_rules,
};

/// The Landlock ABI the rules are written for (Linux 6.12): file system access,
/// and scoped signals and abstract Unix sockets. Older kernels enforce what
/// they know.
const ABI_USED: ABI = ABI::V6;

/// What every plugin may read and execute: the system's programs and libraries,
/// the configuration they need (dynamic linker, certificates, time zones, name
/// resolution), facts about the machine, and its own `/proc` entry.
const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib32",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/gai.conf",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pki",
    "/etc/resolv.conf",
    "/etc/ssl",
    "/etc/timezone",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/self",
    "/proc/stat",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
    "/dev/random",
    "/dev/urandom",
];

/// Devices every plugin may write.
const SYSTEM_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// The paths one plugin process may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Read and execute (files and folders, with what is beneath).
    pub read: Vec<PathBuf>,
    /// Read, execute, write, create and remove (but no device nodes).
    pub write: Vec<PathBuf>,
}

/// Why a plugin could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The kernel has no Landlock (or it is disabled).
    #[error(
        "Landlock is not available on this kernel, so plugins cannot be confined; \
         start the supervisor with --unconfined-plugins to run them unconfined"
    )]
    Unavailable,
    /// The rules could not be built or applied.
    #[error("failed to confine the plugin: {0}")]
    Rules(#[from] RulesetError),
}

impl Confinement {
    /// The confinement of a plugin in `folder` running `program`, with a private
    /// temporary folder `temporary` and the extra paths its manifest grants.
    pub fn for_plugin(
        folder: &Path,
        program: &Path,
        temporary: &Path,
        extra_read: &[PathBuf],
        extra_write: &[PathBuf],
    ) -> Self {
        // The folder is read-only: its manifest and environment files are what
        // the supervisor reads (and builds from, unconfined) at the next start.
        let mut read: Vec<PathBuf> = SYSTEM_READ.iter().map(PathBuf::from).collect();
        read.push(program_root(program));
        read.push(folder.to_owned());
        read.extend(extra_read.iter().map(|path| folder.join(path)));
        let mut write: Vec<PathBuf> = SYSTEM_WRITE.iter().map(PathBuf::from).collect();
        write.push(temporary.to_owned());
        write.extend(extra_write.iter().map(|path| folder.join(path)));
        Self { read, write }
    }

    /// The arguments of `corral confine` that apply this confinement.
    pub fn arguments(&self) -> Vec<OsString> {
        let mut arguments = Vec::with_capacity(2 * (self.read.len() + self.write.len()));
        for (flag, paths) in [("--read", &self.read), ("--write", &self.write)] {
            for path in paths {
                arguments.push(flag.into());
                arguments.push(path.into());
            }
        }
        arguments
    }

    /// Restricts the calling process (and what it executes) to these paths.
    /// Paths that do not exist are skipped. `no_new_privs` is set.
    pub fn enforce(&self) -> Result<RulesetStatus, ConfineError> {
        let status = Ruleset::default()
            .handle_access(AccessFs::from_all(ABI_USED))?
            .scope(Scope::from_all(ABI_USED))?
            .create()?
            .add_rules(path_beneath_rules(
                &self.read,
                AccessFs::from_read(ABI_USED),
            ))?
            .add_rules(path_beneath_rules(
                &self.write,
                AccessFs::from_all(ABI_USED) & !(AccessFs::MakeBlock | AccessFs::MakeChar),
            ))?
            .restrict_self()?;
        if status.ruleset == RulesetStatus::NotEnforced {
            return Err(ConfineError::Unavailable);
        }
        Ok(status.ruleset)
    }
}

/// What must be readable to run `program`: the installation it belongs to when
/// it sits in the `bin` folder of one (beside a `lib` folder: an interpreter
/// needs its standard library; `.venv/bin/python` leads to the Python it was
/// made from), else the file alone. Never `/`.
fn program_root(program: &Path) -> PathBuf {
    let program = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_owned());
    let installation = program
        .parent()
        .filter(|bin| bin.file_name().is_some_and(|name| name == "bin"))
        .and_then(Path::parent)
        .filter(|prefix| prefix.parent().is_some() && prefix.join("lib").is_dir());
    installation.map_or(program.clone(), Path::to_owned)
}

/// A new folder for the plugins' temporary folders: a random name that must
/// not exist yet (no one can plant a link there), mode 0711 (a plugin user
/// reaches its own folder beneath, and lists nothing).
pub fn scratch_folder() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let suffix: u64 = rand::random();
    let folder = std::env::temp_dir().join(format!("corral-{}-{suffix:016x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o711).create(&folder)?;
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o711))?;
    Ok(folder)
}

/// The user plugins run as (when the supervisor runs as root, so that no
/// plugin has root's powers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginUser {
    /// Its user id.
    pub uid: u32,
    /// Its primary group id.
    pub gid: u32,
}

impl PluginUser {
    /// A user by name or number; its primary group goes with it.
    pub fn lookup(name: &str) -> Result<Self, String> {
        let user = match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(name),
        }
        .map_err(|error| format!("cannot look up the user `{name}`: {error}"))?
        .ok_or_else(|| format!("there is no user `{name}`"))?;
        Ok(Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }
}

/// Whether this kernel can confine plugins (checked once at start, without
/// restricting the supervisor).
pub fn available() -> bool {
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|ruleset| ruleset.create())
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_gets_its_folder_its_interpreter_and_a_temporary_folder() {
        let confinement = Confinement::for_plugin(
            Path::new("/srv/plugins/demo"),
            Path::new("/opt/python/bin/python3"),
            Path::new("/tmp/corral-1/demo"),
            &[PathBuf::from("data")],
            &[],
        );
        // No `lib` beside that `bin`: the program alone.
        assert!(
            confinement
                .read
                .contains(&PathBuf::from("/opt/python/bin/python3"))
        );
        assert!(
            confinement
                .read
                .contains(&PathBuf::from("/srv/plugins/demo/data"))
        );
        // Its folder is read-only: the supervisor reads its manifest again.
        assert!(
            confinement
                .read
                .contains(&PathBuf::from("/srv/plugins/demo"))
        );
        assert!(
            !confinement
                .write
                .contains(&PathBuf::from("/srv/plugins/demo"))
        );
        assert!(
            confinement
                .write
                .contains(&PathBuf::from("/tmp/corral-1/demo"))
        );
        assert!(
            !confinement
                .read
                .iter()
                .any(|path| path == Path::new("/etc"))
        );
        let arguments = confinement.arguments();
        assert_eq!(
            arguments.len(),
            2 * (confinement.read.len() + confinement.write.len())
        );
        assert_eq!(arguments[0], "--read");
    }

    #[test]
    fn plugin_users_are_found_by_name_or_number() {
        let root = PluginUser::lookup("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(PluginUser::lookup("0"), Ok(root));
        assert_eq!(
            PluginUser::lookup("no-such-user-here"),
            Err("there is no user `no-such-user-here`".into())
        );
    }

    #[test]
    fn a_program_outside_an_installation_is_allowed_alone() {
        assert_eq!(
            program_root(Path::new("/does/not/exist/plugin")),
            PathBuf::from("/does/not/exist/plugin")
        );
        // A `bin` without a `lib` beside it (a home's `bin`) is no installation.
        assert_eq!(
            program_root(Path::new("/does/not/exist/bin/tool")),
            PathBuf::from("/does/not/exist/bin/tool")
        );
        assert_eq!(
            program_root(Path::new("/usr/bin/env")),
            PathBuf::from("/usr")
        );
    }
}
