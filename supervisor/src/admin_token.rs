//! Where the admin token of the Admin API comes from: `CORRAL_ADMIN_TOKEN`, else
//! a file that only its owner can read, created with a random token when it is
//! missing (so `corral ctl` and grpcurl on the same machine read it there).

use std::{
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

/// The variable that gives the token itself (containers, secrets managers).
pub const TOKEN_VARIABLE: &str = "CORRAL_ADMIN_TOKEN";

/// The token from `CORRAL_ADMIN_TOKEN` if set, else from `path`.
pub fn from_environment_or(path: &Path, create: bool) -> io::Result<String> {
    if let Some(token) = std::env::var(TOKEN_VARIABLE)
        .ok()
        .filter(|token| !token.trim().is_empty())
    {
        return Ok(token.trim().to_owned());
    }
    if create {
        load_or_create(path)
    } else {
        load(path)
    }
}

/// The token in `path`.
pub fn load(path: &Path) -> io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let token = text.trim();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} holds no token", path.display()),
        ));
    }
    Ok(token.to_owned())
}

/// The token in `path`; when there is none, a new random one written there
/// with owner-only permissions (0600), its folder created if needed.
pub fn load_or_create(path: &Path) -> io::Result<String> {
    match load(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        loaded => return loaded,
    }
    if let Some(folder) = path
        .parent()
        .filter(|folder| !folder.as_os_str().is_empty())
    {
        std::fs::create_dir_all(folder)?;
    }
    let token = crate::lifecycle::random_token();
    // A temporary file, renamed into place: a reader never sees a half-written
    // token, and of two processes starting together one token wins.
    let suffix: u64 = rand::random();
    let temporary = path.with_extension(format!("tmp-{}-{suffix:016x}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    drop(file);
    let linked = std::fs::hard_link(&temporary, path);
    std::fs::remove_file(&temporary)?;
    match linked {
        Ok(()) => Ok(token),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => load(path),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_missing_token_is_created_owner_only_and_then_kept() {
        let folder = std::env::temp_dir().join(format!("corral-token-{}", std::process::id()));
        let path = folder.join("nested/admin-token");
        let created = load_or_create(&path).expect("created");
        assert_eq!(created.len(), 64);
        let mode = std::fs::metadata(&path)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create(&path).expect("kept"), created);
        assert_eq!(load(&path).expect("read"), created);
        std::fs::write(&path, " \n").expect("emptied");
        assert_eq!(
            load(&path).expect_err("empty").kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::remove_dir_all(&folder).expect("removed");
    }
}
