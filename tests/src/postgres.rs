//! Real PostgreSQL servers for the collector tests: Debian's `postgresql` (installed by
//! `scripts/setup.sh`), a cluster made by `initdb` in a directory of its own and served on a
//! free loopback port, with trust authentication for one superuser. One server is shared by
//! the tests of a process, each test in a database of its own. As root, where `initdb`
//! refuses to run, the cluster belongs to `nobody`. A server is stopped when its handle is
//! dropped, and also when the test process ends however it ends: it runs under a shell that
//! stops it once the test's end of a pipe closes.

use crate::process::{free_port, temp_dir};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The role the tests connect as.
pub const USER: &str = "vigil";

/// One `postgres` server and its cluster.
pub struct PostgresServer {
    /// Its loopback port.
    pub port: u16,
    dir: PathBuf,
    running: Option<(Child, ChildStdin)>,
}

/// The directory of the newest PostgreSQL's programs under `/usr/lib/postgresql`, where
/// Debian puts them (only a few are linked onto PATH).
pub fn bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let version: u32 = name.parse().ok()?;
            root.join(&name)
                .join("bin/postgres")
                .is_file()
                .then_some(version)
        })
        .max();
    match newest {
        Some(version) => root.join(version.to_string()).join("bin"),
        None => panic!(
            "no PostgreSQL under {}: scripts/setup.sh installs Debian's postgresql",
            root.display()
        ),
    }
}

/// Whether this process runs as root, which `initdb` and `postgres` refuse.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// `command` as the cluster's owner: this user, or `nobody` when running as root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "nobody", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl PostgresServer {
    /// Makes a cluster and starts its server on a free port; `settings` are `name=value`
    /// server settings added to the defaults.
    pub fn start(name: &str, settings: &[&str]) -> PostgresServer {
        let dir = temp_dir(&format!("postgres-{name}"));
        if is_root() {
            // The cluster and the server's socket live in `dir`, so its owner must too.
            let out = Command::new("chown")
                .args(["nobody:", dir.to_str().unwrap()])
                .output()
                .expect("chown runs");
            assert!(out.status.success(), "chown nobody {}", dir.display());
        }
        let bin = bin_dir();
        let data = dir.join("data");
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .expect("initdb runs (is postgresql installed? scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut args = vec![
            bin.join("postgres").display().to_string(),
            "-D".into(),
            data.display().to_string(),
            "-k".into(),
            dir.display().to_string(),
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            "max_connections=200".into(),
        ];
        for setting in settings {
            args.extend(["-c".to_string(), setting.to_string()]);
        }
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        // The shell waits for the pipe from this process to close (at drop or exit), then
        // asks the server for a fast shutdown, which ends open connections.
        let script = format!(
            "{} >'{}/postgres.log' 2>&1 & pid=$!; read -r _; kill -INT $pid; wait $pid",
            quoted.join(" "),
            dir.display()
        );
        let mut child = as_owner(Path::new("bash"))
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("bash runs");
        let stdin = child.stdin.take().expect("piped stdin");
        let server = PostgresServer {
            port,
            dir,
            running: Some((child, stdin)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.connect("postgres").is_err() {
            assert!(
                Instant::now() < deadline,
                "postgres did not start on port {port}: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// A server that also accepts TLS (`ssl=on`) with `issued` as its certificate, whose
    /// files belong to the cluster's owner as PostgreSQL wants of its key.
    pub fn start_tls(name: &str, issued: &crate::pki::Issued) -> PostgresServer {
        let files = temp_dir(&format!("postgres-{name}-certificate"));
        let (cert, key) = issued.write(&files, "server");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        if is_root() {
            for path in [&files, &cert, &key] {
                let out = Command::new("chown")
                    .args(["nobody:", path.to_str().unwrap()])
                    .output()
                    .expect("chown runs");
                assert!(out.status.success(), "chown nobody {}", path.display());
            }
        }
        PostgresServer::start(
            name,
            &[
                "fsync=off",
                "ssl=on",
                &format!("ssl_cert_file={}", cert.display()),
                &format!("ssl_key_file={}", key.display()),
            ],
        )
    }

    /// One server shared by the tests of this process (each test makes its own database).
    pub fn shared() -> &'static PostgresServer {
        static SHARED: OnceLock<PostgresServer> = OnceLock::new();
        SHARED.get_or_init(|| PostgresServer::start("shared", &["fsync=off"]))
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// `postgres://vigil@127.0.0.1:PORT/DATABASE`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// A client connected to `database`.
    pub fn connect(&self, database: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Client::connect(&self.url(database), postgres::NoTls)
    }

    /// Makes an empty database named `name` (dropping one of that name first) and returns
    /// its URL.
    pub fn database(&self, name: &str) -> String {
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "a plain database name: {name}"
        );
        // One at a time: CREATE DATABASE copies template1, which a concurrent copy holds.
        static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = CREATING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut admin = self.connect("postgres").expect("connect to postgres");
        // Separate statements: several in one query would run as one transaction, which
        // CREATE DATABASE refuses.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("CREATE DATABASE {name}"),
        ] {
            admin.batch_execute(&sql).unwrap_or_else(|e| {
                let message = e
                    .as_db_error()
                    .map_or(e.to_string(), |d| d.message().into());
                panic!("{sql}: {message}")
            });
        }
        self.url(name)
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if let Some((mut child, mut stdin)) = self.running.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
