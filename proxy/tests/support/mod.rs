//! What the command-line tests share: running the `vigil` binary built for them.

use std::process::Command;

/// Runs `vigil` with `args`: exit code (-1 when killed by a signal), stdout, stderr.
pub fn vigil(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
