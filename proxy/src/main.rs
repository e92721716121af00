//! `vigil`: the command-line entry point. For now it loads and exercises guards; the proxy,
//! the admin API, the reporter and the collector will be wired here.

#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use vigil_host::{
    Chain, Client, GuardResult, GuardSource, GuardSpec, Pattern, Request, Response, Runtime,
    RuntimeConfig,
};

/// Exit status for bad input: a missing or invalid guard, a bad option (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "A sidecar reverse proxy that runs sandboxed WebAssembly guards on live API traffic."
)]
struct Cli {
    /// Log filter, e.g. `info` or `vigil=debug` (also from VIGIL_LOG).
    #[arg(long, global = true, env = "VIGIL_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a guard, check it against the guard world and run its init with the given config.
    CheckGuard(GuardArgs),
    /// Send a series of identical requests through a guard and print each verdict.
    Try(TryArgs),
}

#[derive(Args)]
struct GuardArgs {
    /// The guard component (.wasm, built for wasm32-wasip2).
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

#[derive(Args)]
struct TryArgs {
    #[command(flatten)]
    guard: GuardArgs,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Client identity key.
    #[arg(long, default_value = "203.0.113.7")]
    client: String,
    /// Response status the upstream is assumed to give.
    #[arg(long, default_value_t = 200)]
    status: u16,
    /// How many requests to send.
    #[arg(long, default_value_t = 5)]
    count: u32,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::CheckGuard(args) => check_guard(&args),
        Command::Try(args) => try_guard(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn load(runtime: &Runtime, args: &GuardArgs) -> anyhow::Result<Chain> {
    let mut spec = GuardSpec::new(&args.name, GuardSource::File(args.module.clone()));
    spec.config_json = args.config.clone();
    spec.routes = args
        .routes
        .iter()
        .map(|r| Pattern::parse(r))
        .collect::<Result<_, _>>()
        .context("--route")?;
    let guard = runtime.load_guard(spec)?;
    Ok(Chain::new(vec![guard])?)
}

fn check_guard(args: &GuardArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let chain = load(&runtime, args)?;
    let guard = &chain.guards()[0];
    println!(
        "ok: guard {:?} from {} (content hash {:016x}) targets vigil:guard@0.1.0 and accepted its config",
        guard.name(),
        args.module.display(),
        guard.content_hash()
    );
    Ok(())
}

fn try_guard(args: &TryArgs) -> anyhow::Result<()> {
    let runtime = Runtime::new(RuntimeConfig::default())?;
    let chain = load(&runtime, &args.guard)?;
    println!(
        "{:>3}  {:<8} {:<24} {:<7} detail",
        "#", "method", "path", "verdict"
    );
    for i in 1..=args.count {
        let mut req = Request {
            method: args.method.to_ascii_uppercase(),
            path: args.path.clone(),
            route: None,
            query: None,
            headers: Vec::new(),
            client: Client {
                key: args.client.clone(),
                ip: args.client.clone(),
                public: true,
                authenticated: false,
            },
            received_ms: runtime.state().clock().now_ms(),
            body: None,
        };
        let decision = chain.evaluate(&mut req);
        let (verdict, detail) = match (
            &decision.denial,
            decision.outcomes.first().map(|o| &o.result),
        ) {
            (Some(d), _) => {
                let retry = d
                    .retry_after_secs
                    .map(|s| format!(", retry after {s}s"))
                    .unwrap_or_default();
                ("deny", format!("{} {}{retry}", d.status, d.reason))
            }
            (None, Some(GuardResult::Faulted(f))) => (
                "allow",
                format!("fault ({}): {}", f.kind.as_str(), f.detail),
            ),
            (None, Some(GuardResult::Denied(d))) => (
                "allow",
                format!("monitor: would deny {} {}", d.status, d.reason),
            ),
            (None, None) => ("allow", "no guard matches this route".into()),
            (None, Some(GuardResult::Allowed)) => ("allow", String::new()),
        };
        println!(
            "{i:>3}  {:<8} {:<24} {verdict:<7} {detail}",
            req.method, req.path
        );
        let status = decision.denial.as_ref().map_or(args.status, |d| d.status);
        let resp = Response {
            status,
            headers: Vec::new(),
            latency_us: 0,
        };
        chain.observe(&runtime, &req, &resp, &decision);
    }
    Ok(())
}
