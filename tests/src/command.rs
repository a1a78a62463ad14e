//! Runs a PostgreSQL tool to completion and turns a failure into an error that carries the tool's
//! stderr and stdout. A failed initdb is only diagnosable from what it printed, so that text must
//! reach the panic message of the test, not vanish in a pipe.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::error::HarnessError;

/// Runs `cmd` with `stdin` fed to it (none when empty) and returns its output if it exited 0.
pub(crate) fn run(
    mut cmd: Command,
    what: &'static str,
    stdin: &[u8],
) -> Result<Output, HarnessError> {
    let command = describe(&cmd);
    let program = std::path::PathBuf::from(cmd.get_program());
    let spawn_error = |source| HarnessError::io(what, &program, source);
    cmd.stdin(if stdin.is_empty() {
        Stdio::null()
    } else {
        Stdio::piped()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(spawn_error)?;
    let pipe = child.stdin.take();
    // Feed stdin from its own thread: a long script whose output fills the stdout pipe would
    // otherwise deadlock against us still writing.
    let output = std::thread::scope(|scope| {
        if let Some(mut pipe) = pipe {
            // A tool that exits early (psql stopping at the first error) closes its stdin; the
            // broken pipe is not the failure worth reporting, its exit status and stderr are.
            scope.spawn(move || {
                let _ = pipe.write_all(stdin);
            });
        }
        child.wait_with_output()
    })
    .map_err(spawn_error)?;
    if output.status.success() {
        return Ok(output);
    }
    Err(HarnessError::CommandFailed {
        what,
        command,
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The command line as a human would type it (environment overrides first), for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    parts.push(cmd.get_program().to_string_lossy().into_owned());
    parts.extend(cmd.get_args().map(|arg| arg.to_string_lossy().into_owned()));
    parts.join(" ")
}
