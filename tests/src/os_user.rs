//! Which OS user runs initdb and postgres. Both refuse to run as root (a server running as root
//! could be turned against the whole machine), and CI containers and this project's dev machines
//! run tests as root, so as root the server tools run as the `postgres` user that Debian's packages
//! create; otherwise they run as whoever runs the tests.
//!
//! The switch is a plain setuid/setgid in the child (`CommandExt::uid/gid`), not `runuser`: the
//! child's environment stays exactly what we set (LD_LIBRARY_PATH for bin dirs whose libraries live
//! elsewhere), no PAM session sits between us and the postmaster, and the postmaster stays our own
//! child so we can wait for it.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::error::HarnessError;

/// The account used when the tests run as root.
const SERVER_USER: &str = "postgres";

#[derive(Debug, Clone)]
pub(crate) enum RunAs {
    /// Not root: the tools run as we do.
    CurrentUser,
    /// Root: the tools run as this account.
    User { name: String, uid: u32, gid: u32 },
}

impl RunAs {
    pub(crate) fn detect() -> Result<RunAs, HarnessError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(RunAs::CurrentUser);
        }
        let (uid, gid) =
            lookup_user(SERVER_USER).ok_or(HarnessError::NoServerUser { user: SERVER_USER })?;
        Ok(RunAs::User {
            name: SERVER_USER.to_owned(),
            uid,
            gid,
        })
    }

    /// Makes `cmd` run as this user.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        if let RunAs::User { uid, gid, .. } = self {
            // std drops root's supplementary groups (setgroups(0)) before setuid.
            cmd.uid(*uid).gid(*gid);
        }
    }

    /// Gives `path` to this user, so the server can write where we created things as root.
    pub(crate) fn chown(&self, path: &Path) -> Result<(), HarnessError> {
        match self {
            RunAs::CurrentUser => Ok(()),
            RunAs::User { uid, gid, .. } => std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(|e| {
                    HarnessError::io(
                        "cannot hand a cluster file to the server's OS user",
                        path,
                        e,
                    )
                }),
        }
    }

    /// The user's name, for messages.
    pub(crate) fn name(&self) -> String {
        match self {
            RunAs::CurrentUser => {
                std::env::var("USER").unwrap_or_else(|_| "the current user".to_owned())
            }
            RunAs::User { name, .. } => name.clone(),
        }
    }
}

/// (uid, gid) of `name`, through the reentrant libc lookup (tests start servers from many threads).
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be overwritten by getpwnam_r.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and buf's length is passed with it.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}
