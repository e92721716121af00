//! `vigil`: the command-line entry point. It only wires: read the configuration, build the
//! sidecar, bind, serve, wait for a signal, drain.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use vigil::config::{Config, LogFormat, Overrides};
use vigil::serve::Listeners;
use vigil::sidecar::Sidecar;
use vigil_host::{Chain, Runtime, RuntimeConfig};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Exit status for bad input: a missing or invalid guard, a bad option (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "vigil",
    version = env!("VIGIL_VERSION"),
    about = "A sidecar reverse proxy that runs sandboxed WebAssembly guards on live API traffic."
)]
struct Cli {
    /// Log filter, e.g. `info` or `vigil=debug`; overrides the configuration's log.level.
    #[arg(long, global = true, env = "VIGIL_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar: proxy clients to the upstream through the guard chain.
    #[command(long_about = RUN_ABOUT)]
    Run(ConfigArgs),
    /// Validate the configuration, the API spec and every guard without serving.
    Check(CheckArgs),
    /// Start a sample shop API with Vigil and the stock guards in front, drive normal traffic
    /// and four attacks through it, and print what was blocked and why.
    Demo(DemoArgs),
    /// Load a guard, check it against the guard contract (either world) and run its init with the given config.
    CheckGuard(GuardArgs),
    /// Send requests (a script of them, or one repeated) through a guard or a whole
    /// configuration and print each verdict and finding; with expectations, a test.
    #[command(long_about = vigil::cli::try_script::ABOUT)]
    Try(vigil::cli::try_script::TryArgs),
    /// Run recorded traffic (access logs) through the configured guards on the log's own
    /// clock and print what they would have refused.
    #[command(long_about = REPLAY_ABOUT)]
    Replay(ReplayArgs),
    /// Run the collector: receive sidecars' reports, merge them fleet-wide, serve the
    /// dashboard and the JSON API.
    #[command(long_about = COLLECT_ABOUT)]
    Collect(CollectArgs),
    /// Gate a delivery pipeline on what the collector knows: exit 1 when an internal
    /// endpoint is public, a critical vulnerability is exposed, a shadow or zombie endpoint
    /// appears, ... (--fail-on); report as text, JSON or SARIF.
    #[command(long_about = vigil::cli::exposure::ABOUT)]
    Exposure(vigil::cli::exposure::ExposureArgs),
    /// Write a new project: `vigil new guard NAME --lang rust|c|python|js`.
    #[command(subcommand)]
    New(vigil::cli::new_guard::NewCommand),
    /// Print a completion script for a shell to stdout.
    #[command(long_about = COMPLETIONS_ABOUT)]
    Completions(CompletionsArgs),
}

const COMPLETIONS_ABOUT: &str = "Print a completion script for a shell to stdout.

  vigil completions bash > ~/.local/share/bash-completion/completions/vigil
  vigil completions zsh > ~/.zfunc/_vigil            # with fpath+=(~/.zfunc) before compinit
  vigil completions fish > ~/.config/fish/completions/vigil.fish";

#[derive(Args)]
struct CompletionsArgs {
    /// The shell the script is for.
    shell: clap_complete::Shell,
}

const REPLAY_ABOUT: &str = "Run recorded traffic through the configured guards and print what \
they would have refused.

Each logged request goes through the configuration's chain as a live one would (path \
normalisation, identity, trusted proxies, routes, the API spec, the allowlist, bans, the \
guards), on a virtual clock driven by the log's timestamps: windows and rates mean what they \
mean in production, and the replay runs as fast as the guards allow. The logged status is the \
answer the guards observe (404 shares, failed logins), unless a guard refuses the request. \
Nothing is forwarded and nothing is reported.

Formats: nginx's and Apache's combined and common formats; JSON lines from Vigil's access log, \
Envoy, Traefik, Caddy or an nginx log_format with escape=json (detected per line unless \
--format is given); HAR files from browsers' developer tools (--format har, or a file named \
*.har), whose header fields and request bodies the guards see as well. FILE may be \
gzip-compressed, or - for standard input. Lines (HAR entries) that cannot be read are counted \
and the first ones shown with their number.

Exit status: 0; 1 with --fail-on-deny when a request would be refused; 64 when the \
configuration or a file cannot be read.

  vigil replay --config vigil.toml /var/log/nginx/access.log.1 /var/log/nginx/access.log.2.gz
  zcat old.log.gz | vigil replay --config vigil.toml --json - > findings.json
  vigil replay --config vigil.toml --default-client 198.51.100.7 session.har";

#[derive(Args)]
struct ReplayArgs {
    /// The configuration whose guards, identity, routes and spec are replayed.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The lines' format [default: detected per line: JSON when it starts with {, else combined].
    #[arg(long, value_enum)]
    format: Option<vigil::cli::replay::parse::InputFormat>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Exit 1 when any request would be refused (for CI).
    #[arg(long)]
    fail_on_deny: bool,
    /// HAR files: the largest read, in bytes (after decompression; 1 GiB by default).
    #[arg(long, default_value_t = vigil::cli::replay::DEFAULT_MAX_HAR_BYTES)]
    max_har_bytes: u64,
    /// HAR files: the client address of an entry without X-Forwarded-For (a HAR's
    /// serverIPAddress is the server's).
    #[arg(long, default_value_t = vigil::cli::replay::DEFAULT_CLIENT)]
    default_client: std::net::IpAddr,
    /// Access log files, in time order; - for standard input.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
}

const RUN_ABOUT: &str = "Run the sidecar: proxy clients to the upstream through the guard chain.

The configuration is read from --config, by default vigil.toml in the working directory. \
Without a file, --upstream (or VIGIL_UPSTREAM) is enough: every other setting keeps its \
default (clients on 0.0.0.0:8080, the admin API on 127.0.0.1:9901, no guards), and \
--listen, --admin and --log override those as they override a file's. SIGHUP reloads the \
guards, SIGTERM or SIGINT drains and exits 0.

  vigil run --upstream http://127.0.0.1:3000
  vigil run --config /etc/vigil/vigil.toml";

const COLLECT_ABOUT: &str = "Run the collector: receive sidecars' reports, merge them fleet-wide, \
serve the dashboard and the JSON API.

Sidecars POST gzip JSON reports to listen.address (default 0.0.0.0:9000) at /v1/reports with \
`Authorization: Bearer <token>`; each [[token]] reports for one `service` or, without one, for \
the whole fleet. Reports are stored in the SQLite file storage.path (WAL mode, the default) or \
in the PostgreSQL database storage.url, which several collectors may share. The dashboard \
(`/`), the JSON API (`/api/services`, `/api/endpoints`, `/api/findings`, \
`/api/clients/denied`, `/api/vulnerabilities`) and Prometheus metrics (`/metrics`) are served \
on api.address (default 127.0.0.1:9001). Known-vulnerable endpoints (vulnerabilities.known, \
JSON lists) and OWASP ZAP JSON reports (vulnerabilities.zap) are ranked by runtime exposure. Each \
[[webhook]] url receives a Slack-compatible JSON post when a service reports a new kind of finding \
or an endpoint becomes publicly reached. SIGTERM or SIGINT stops \
accepting and drains. --check validates the configuration and the files it names, and exits.

Minimal collector.toml:

  [[token]]
  token = \"a-long-random-secret\"
  service = \"shop\"          # leave out for a fleet-wide token";

#[derive(Args)]
struct CollectArgs {
    /// The collector's configuration file (TOML).
    #[arg(long, short, default_value = "collector.toml")]
    config: PathBuf,
    /// Validate the configuration and the vulnerability files it names, then exit.
    #[arg(long)]
    check: bool,
}

#[derive(Args)]
struct DemoArgs {
    /// Run the stock guards compiled in this directory (rate_limit.wasm, sequence.wasm, ...,
    /// as `cargo build -p vigil-guard-artifacts` makes them) instead of the built-in ones.
    #[arg(long)]
    guards: Option<PathBuf>,
}

/// The configuration file read when `--config` is not given.
const DEFAULT_CONFIG: &str = "vigil.toml";

#[derive(Args)]
struct ConfigArgs {
    /// The configuration file (TOML) [default: vigil.toml; without it, --upstream alone will do].
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Public listen address, overriding listen.address.
    #[arg(long, env = "VIGIL_LISTEN")]
    listen: Option<String>,
    /// Upstream URL, overriding upstream.url; enough to run without a configuration file.
    #[arg(long, env = "VIGIL_UPSTREAM")]
    upstream: Option<String>,
    /// Admin API listen address, overriding admin.address.
    #[arg(long, env = "VIGIL_ADMIN")]
    admin: Option<String>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Also print the settings in force as JSON: every key with its value (defaults filled in,
    /// overrides applied), the report token redacted, as the admin API's GET /config shows them.
    #[arg(long)]
    print: bool,
}

impl ConfigArgs {
    fn load(&self, log: &Option<String>) -> anyhow::Result<Config> {
        let overrides = self.overrides(log);
        let file = match &self.config {
            Some(file) => file.as_path(),
            None if Path::new(DEFAULT_CONFIG).exists() => Path::new(DEFAULT_CONFIG),
            None if self.upstream.is_some() => return Ok(Config::without_file(&overrides)?),
            None => anyhow::bail!(
                "no configuration: {DEFAULT_CONFIG} is not in the working directory; pass \
                 --config FILE, or --upstream URL to run with every other setting at its default"
            ),
        };
        Ok(Config::load(file, &overrides)?)
    }

    fn overrides(&self, log: &Option<String>) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            admin: self.admin.clone(),
            log_level: log.clone(),
            report_token: std::env::var("VIGIL_REPORT_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        }
    }
}

#[derive(Args)]
struct GuardArgs {
    /// The guard component (.wasm, built for wasm32-wasip2), or `builtin:NAME` for a stock
    /// guard compiled into vigil (builtin:rate-limit, builtin:sequence, ...).
    module: PathBuf,
    /// The guard's JSON configuration.
    #[arg(long, default_value = "{}")]
    config: String,
    /// The guard's name (its state namespace).
    #[arg(long, default_value = "guard")]
    name: String,
    /// Route patterns the guard applies to, e.g. `POST /login` (repeatable; default: all).
    #[arg(long = "route")]
    routes: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run(args, &cli.log),
        Command::Check(args) => check(args, &cli.log),
        Command::Demo(args) => demo(args, &cli.log),
        Command::CheckGuard(args) => init_logging(&cli_log(&cli.log, "warn"), LogFormat::Text)
            .and_then(|()| check_guard(args)),
        Command::Try(args) => match init_logging(&cli_log(&cli.log, "warn"), LogFormat::Text)
            .and_then(|()| vigil::cli::try_script::run(args))
        {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Collect(args) => collect(args, &cli.log),
        Command::Exposure(args) => {
            if let Err(e) = init_logging(&cli_log(&cli.log, "warn"), LogFormat::Text) {
                eprintln!("vigil: {e:#}");
                return ExitCode::from(EXIT_USAGE);
            }
            return match vigil::cli::exposure::run(args) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(vigil::cli::exposure::EXIT_GATE_FAILED),
                Err(e) => {
                    eprintln!("vigil exposure: {e}");
                    ExitCode::from(e.exit_code())
                }
            };
        }
        Command::New(command) => vigil::cli::new_guard::main(command),
        Command::Completions(args) => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "vigil",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Replay(args) => match init_logging(&cli_log(&cli.log, "warn"), LogFormat::Text)
            .and_then(|()| replay(args))
        {
            Ok(refused) if refused && args.fail_on_deny => return ExitCode::from(1),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `--log`, or `default` without it.
fn cli_log(log: &Option<String>, default: &str) -> String {
    log.clone().unwrap_or_else(|| default.to_string())
}

/// Logs to stderr through `filter`, checked first: a filter the subscriber cannot use would
/// otherwise silence the log without a word.
fn init_logging(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = vigil_common::config::log_filter("--log (VIGIL_LOG)", filter)
        .map_err(anyhow::Error::msg)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        // Colour codes are noise in a file or a log collector; NO_COLOR (no-color.org) is
        // honoured as the subscriber would.
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        );
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

fn demo(args: &DemoArgs, log: &Option<String>) -> anyhow::Result<()> {
    init_logging(&cli_log(log, "error"), LogFormat::Text)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(vigil::cli::demo::run(args.guards.as_deref()))
}

fn check(args: &CheckArgs, log: &Option<String>) -> anyhow::Result<()> {
    init_logging(&cli_log(log, "warn"), LogFormat::Text)?;
    let config = args.config.load(log)?;
    let effective = config.effective.clone();
    let guards = config.guards.len();
    let source = config.file.as_ref().map_or_else(
        || "the configuration from the command line".to_string(),
        |file| file.display().to_string(),
    );
    Sidecar::new(config, args.config.overrides(log))?;
    println!("ok: {source} is valid; {guards} guard(s) loaded and initialised");
    if args.print {
        println!("{}", serde_json::to_string_pretty(&effective)?);
    }
    Ok(())
}

fn run(args: &ConfigArgs, log: &Option<String>) -> anyhow::Result<()> {
    if let Some(filter) = log {
        // Before the file, so that the error is not taken for one of the file's.
        vigil_common::config::log_filter("--log (VIGIL_LOG)", filter)
            .map_err(anyhow::Error::msg)?;
    }
    let config = args.load(log)?;
    init_logging(&config.log.level, config.log.format)?;
    // Clients are served by the workers' own event loops (serve::run); this one
    // runs the admin API, the reporter, reloads and signals.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vigil-control")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args.overrides(log)))
}

async fn serve(config: Config, overrides: Overrides) -> anyhow::Result<()> {
    let (public_address, admin_address) = (config.listen.address, config.admin.address);
    let sidecar = Arc::new(tokio::task::block_in_place(|| {
        Sidecar::new(config, overrides)
    })?);
    let listeners = Listeners::bind(public_address, admin_address)?;
    tokio::spawn(reload_on_hangup(sidecar.clone()));
    tokio::spawn(reopen_on_usr1(sidecar.clone()));
    tracing::info!(%public_address, %admin_address, "listening");
    vigil::serve::run(sidecar, listeners, wait_for_shutdown_signal()).await
}

/// Reloads the guard chain on SIGHUP (changed files are noticed by the server itself).
async fn reload_on_hangup(sidecar: Arc<Sidecar>) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGHUP; reload with POST /guards/reload");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        tracing::info!(cause = "SIGHUP", "reloading the guard chain");
        let reloading = sidecar.clone();
        let _ = tokio::task::spawn_blocking(move || reloading.reload()).await;
    }
}

/// Opens the access log again on SIGUSR1, as nginx does, for log rotation.
async fn reopen_on_usr1(sidecar: Arc<Sidecar>) {
    let mut usr1 = match tokio::signal::unix::signal(
        tokio::signal::unix::SignalKind::user_defined1(),
    ) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGUSR1; reopen the access log with SIGHUP");
            return;
        }
    };
    while usr1.recv().await.is_some() {
        sidecar.reopen_access_log();
    }
}

/// Replays the files; whether any request would be refused.
fn replay(args: &ReplayArgs) -> anyhow::Result<bool> {
    use vigil::cli::replay::{render, HarOptions, Input, Replay};
    let config = Config::load(&args.config, &Default::default())?;
    let started = std::time::Instant::now();
    let mut replay = Replay::new(config, args.format)?.with_har(HarOptions {
        max_bytes: args.max_har_bytes,
        default_client: args.default_client,
    });
    // A progress bar where someone watches; none in a pipe or a CI log.
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    for file in &args.files {
        replay.feed(Input::open(file, progress)?)?;
    }
    let summary = replay.finish(started);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", render(&summary, &args.files));
    }
    Ok(summary.refused > 0)
}

fn collect(args: &CollectArgs, log: &Option<String>) -> anyhow::Result<()> {
    let mut config = vigil_collector::config::CollectorConfig::load(&args.config)?;
    if let Some(level) = log {
        config.log.level =
            vigil_common::config::log_filter("--log", level).map_err(anyhow::Error::msg)?;
    }
    if args.check {
        println!("ok: {}", vigil_collector::check(&config)?);
        return Ok(());
    }
    init_logging(&config.log.level, config.log.format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(vigil_collector::run(config, wait_for_shutdown_signal()))
}

async fn wait_for_shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
    }
}

fn load(runtime: &Runtime, args: &GuardArgs) -> anyhow::Result<Chain> {
    let spec = vigil::cli::guard_spec(&args.module, &args.name, &args.config, &args.routes)?;
    let guard = runtime.load_guard(spec)?;
    Ok(Chain::new(vec![guard])?)
}

fn check_guard(args: &GuardArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let chain = load(&runtime, args)?;
    let guard = &chain.guards()[0];
    println!(
        "ok: guard {:?} from {} (content hash {:016x}) exports the vigil:guard@0.1.0 `{}` world and accepted its config",
        guard.name(),
        args.module.display(),
        guard.content_hash(),
        guard.world().as_str()
    );
    Ok(())
}
