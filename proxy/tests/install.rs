//! What an installed `vigil` offers besides serving: the version with the commit it was built
//! from, and shell completions.

use std::path::Path;
use std::process::{Command, Output};

const VIGIL: &str = env!("CARGO_BIN_EXE_vigil");

fn vigil(args: &[&str]) -> Output {
    Command::new(VIGIL).args(args).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `git` in this checkout, when it is one.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn version_names_the_commit_of_a_checkout() {
    let out = vigil(&["--version"]);
    assert!(out.status.success());
    let version = env!("CARGO_PKG_VERSION");
    let in_checkout = git(&["rev-parse", "--show-toplevel"]).is_some_and(|top| {
        Path::new(&top).canonicalize().ok()
            == Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .canonicalize()
                .ok()
    });
    let expected = match std::env::var("VIGIL_COMMIT") {
        Ok(commit) if !commit.trim().is_empty() => {
            format!("vigil {version} (commit {})\n", commit.trim())
        }
        _ if in_checkout => {
            let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap();
            let date = git(&["log", "-1", "--format=%cs", "HEAD"]).unwrap();
            format!("vigil {version} (commit {commit}, {date})\n")
        }
        _ => format!("vigil {version}\n"),
    };
    assert_eq!(stdout(&out), expected);
}

/// Runs `shell` with `args` if it is installed; `None` (with the reason printed) if not.
fn with_shell(shell: &str, args: &[&str]) -> Option<Output> {
    match Command::new(shell).args(args).output() {
        Ok(out) => Some(out),
        Err(e) => {
            eprintln!("skipped the {shell} check: cannot run {shell}: {e}");
            None
        }
    }
}

fn completions(shell: &str) -> (String, std::path::PathBuf) {
    let out = vigil(&["completions", shell]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = stdout(&out);
    let file =
        std::env::temp_dir().join(format!("vigil-completions-{}.{shell}", std::process::id()));
    std::fs::write(&file, &script).unwrap();
    (script, file)
}

#[test]
fn bash_completion_completes_commands_and_options() {
    let (script, file) = completions("bash");
    assert!(script.contains("complete -F _vigil"), "{script}");
    // Source the script and ask it as bash's completion would: `vigil de<TAB>`, then
    // `vigil completions <TAB>`.
    let ask = |words: &str, current: usize| {
        let program = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD={current}; COMP_LINE=\"{words}\"; \
             COMP_POINT=${{#COMP_LINE}}; _vigil vigil \"${{COMP_WORDS[$COMP_CWORD]}}\" \
             \"${{COMP_WORDS[$COMP_CWORD-1]}}\"; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        );
        with_shell("bash", &["-c", &program]).map(|out| {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout(&out)
        })
    };
    if let Some(commands) = ask("vigil de", 1) {
        assert_eq!(commands.trim(), "demo", "vigil de<TAB>");
    }
    if let Some(shells) = ask("vigil completions ''", 2) {
        for shell in ["bash", "zsh", "fish"] {
            assert!(
                shells.lines().any(|l| l == shell),
                "vigil completions <TAB> offers {shell}: {shells}"
            );
        }
    }
    if let Some(options) = ask("vigil run --", 2) {
        for option in ["--config", "--upstream", "--listen", "--admin"] {
            assert!(
                options.lines().any(|l| l == option),
                "vigil run --<TAB> offers {option}: {options}"
            );
        }
    }
    let _ = std::fs::remove_file(file);
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    for (shell, marker, syntax_check) in [
        ("zsh", "#compdef vigil", "-n"),
        ("fish", "complete -c vigil", "--no-execute"),
    ] {
        let (script, file) = completions(shell);
        assert!(
            script.starts_with(marker) || script.contains(marker),
            "{shell}: {script}"
        );
        for command in [
            "run",
            "check",
            "demo",
            "check-guard",
            "try",
            "collect",
            "completions",
        ] {
            assert!(
                script.contains(command),
                "{shell} completion names {command}"
            );
        }
        if let Some(out) = with_shell(shell, &[syntax_check, file.to_str().unwrap()]) {
            assert!(
                out.status.success(),
                "{shell} {syntax_check}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn completions_for_an_unknown_shell_list_the_known_ones() {
    let out = vigil(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'tcsh'") && stderr.contains("bash") && stderr.contains("fish"),
        "{stderr}"
    );
}
