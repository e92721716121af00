//! `vigil demo`: a sample shop API, Vigil in front of it with the stock guards, normal traffic
//! and four attacks, and a readable account of what was blocked and why. Everything runs in
//! this process on loopback sockets and stops when the report is printed.

use crate::config::{Config, Overrides};
use crate::exposure::inventory::Exposure;
use crate::serve::Listeners;
use crate::sidecar::Sidecar;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// The stock guards the demo loads: built-in names, and the file each is compiled to.
const GUARDS: [(&str, &str); 4] = [
    ("rate-limit", "rate_limit.wasm"),
    ("sequence", "sequence.wasm"),
    ("credential-stuffing", "credential_stuffing.wasm"),
    ("enumeration", "enumeration.wasm"),
];

/// Runs the demo with the built-in stock guards, or with those compiled in `guards` when
/// given, printing the report.
pub async fn run(guards: Option<&Path>) -> anyhow::Result<()> {
    let modules = match guards {
        None => GUARDS.map(|(name, _)| format!("{}{name}", crate::builtin::PREFIX)),
        Some(dir) => {
            for (_, file) in GUARDS {
                if !dir.join(file).is_file() {
                    anyhow::bail!(
                        "stock guard {} not found in {}; build the guards with `cargo build -p \
                         vigil-guard-artifacts`, or leave out --guards to run the built-in ones",
                        file,
                        dir.display()
                    );
                }
            }
            // The configuration lives in a temporary directory: module paths must not be
            // relative.
            let dir = dir.canonicalize()?;
            GUARDS.map(|(_, file)| dir.join(file).display().to_string())
        }
    };
    let shop = Shop::start().await?;
    let dir = std::env::temp_dir().join(format!("vigil-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config_path = dir.join("vigil.toml");
    std::fs::write(&config_path, config_text(&modules, shop.addr))?;
    let config = Config::load(&config_path, &Overrides::default())?;
    let sidecar = Arc::new(tokio::task::block_in_place(|| {
        Sidecar::new(config, Overrides::default())
    })?);
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let listeners = Listeners::bind(loopback, loopback)?;
    let proxy = listeners.public.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(crate::serve::run(sidecar.clone(), listeners, async {
        let _ = stopped.await;
    }));

    let client = Client::builder(TokioExecutor::new()).build_http();
    let traffic = Traffic { client, proxy };
    let mut report = Vec::new();
    report.push(traffic.normal_users().await);
    report.push(traffic.credential_stuffing().await);
    report.push(traffic.id_enumeration().await);
    report.push(traffic.checkout_without_cart().await);
    report.push(traffic.burst().await);

    let _ = stop.send(());
    served.await??;
    let _ = std::fs::remove_dir_all(&dir);
    sidecar.collect_guard_findings();
    print_report(&report, &sidecar.inventory.exposure());
    Ok(())
}

/// The demo's configuration; `modules` are the guards' modules in the order of [`GUARDS`].
fn config_text(modules: &[String; 4], shop: SocketAddr) -> String {
    // As TOML strings: a directory name may hold a quote or a backslash.
    let module = |i: usize| toml::Value::String(modules[i].clone()).to_string();
    format!(
        r#"
[listen]
address = "127.0.0.1:0"
[upstream]
url = "http://{shop}"
[identity]
key = "ip"
# The demo's clients all connect from loopback and name their public address in
# X-Forwarded-For, as they would behind a load balancer. The rate limit comes last, so the
# more specific guards name the attacks they recognise.
trusted_proxies = ["127.0.0.1/32"]
[api]
internal_only = ["GET /admin/**"]
[log]
level = "warn"

[[guard]]
name = "sequence"
module = {}
config = {{ rules = [{{ kind = "requires", target = "POST /checkout", after = ["POST /cart/items"], within = "15m" }}] }}

[[guard]]
name = "credential-stuffing"
module = {}
routes = ["POST /login"]
body_limit = 4096
config = {{ account = {{ json_field = "username" }}, max_accounts = 3, max_failures = 5, window = "15m" }}

[[guard]]
name = "enumeration"
module = {}
routes = ["GET /users/{{id}}"]
config = {{ routes = ["GET /users/{{id}}"], max_distinct = 20, window = "10m" }}
[[guard]]
name = "rate-limit"
module = {}
config = {{ rate = 20, per = "second", burst = 20 }}
"#,
        module(1),
        module(2),
        module(3),
        module(0),
    )
}

/// What one scenario sent and what came back.
struct Scenario {
    name: &'static str,
    sent: usize,
    blocked: usize,
    /// Denials by guard and reason, with counts.
    reasons: BTreeMap<String, usize>,
}

struct Traffic {
    client: Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
}

impl Traffic {
    async fn send(
        &self,
        scenario: &mut Scenario,
        from: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> StatusCode {
        let request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.proxy))
            .header("x-forwarded-for", from)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request");
        scenario.sent += 1;
        let Ok(response) = self.client.request(request).await else {
            *scenario.reasons.entry("(no answer)".into()).or_default() += 1;
            return StatusCode::BAD_GATEWAY;
        };
        let status = response.status();
        let is_problem = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v == "application/problem+json");
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if is_problem {
            if let Ok(problem) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(guard) = problem["guard"].as_str() {
                    scenario.blocked += 1;
                    let reason = format!(
                        "{} {} ({})",
                        status.as_u16(),
                        guard,
                        problem["detail"].as_str().unwrap_or("")
                    );
                    *scenario.reasons.entry(reason).or_default() += 1;
                }
            }
        }
        status
    }

    async fn normal_users(&self) -> Scenario {
        let mut s = scenario("normal traffic (10 users)");
        for user in 1..=10 {
            let from = format!("198.51.100.{user}");
            let login = format!(r#"{{"username":"user{user}","password":"correct-horse"}}"#);
            self.send(&mut s, &from, "POST", "/login", &login).await;
            self.send(&mut s, &from, "GET", &format!("/users/{user}"), "")
                .await;
            self.send(
                &mut s,
                &from,
                "POST",
                "/cart/items",
                r#"{"sku":"tea","qty":1}"#,
            )
            .await;
            self.send(&mut s, &from, "POST", "/checkout", "{}").await;
            self.send(
                &mut s,
                &from,
                "GET",
                &format!("/users/{}", user % 3 + 1),
                "",
            )
            .await;
        }
        s
    }

    async fn credential_stuffing(&self) -> Scenario {
        let mut s = scenario("credential stuffing");
        for i in 0..20 {
            let login = format!(r#"{{"username":"victim{i}","password":"hunter2"}}"#);
            self.send(&mut s, "203.0.113.10", "POST", "/login", &login)
                .await;
        }
        s
    }

    async fn id_enumeration(&self) -> Scenario {
        let mut s = scenario("ID enumeration");
        for id in 1..=60 {
            self.send(&mut s, "203.0.113.20", "GET", &format!("/users/{id}"), "")
                .await;
        }
        s
    }

    async fn checkout_without_cart(&self) -> Scenario {
        let mut s = scenario("checkout without cart");
        for _ in 0..3 {
            self.send(&mut s, "203.0.113.30", "POST", "/checkout", "{}")
                .await;
        }
        s
    }

    async fn burst(&self) -> Scenario {
        let mut s = scenario("burst over the rate");
        for _ in 0..60 {
            self.send(&mut s, "203.0.113.40", "GET", "/admin/stats", "")
                .await;
        }
        s
    }
}

fn scenario(name: &'static str) -> Scenario {
    Scenario {
        name,
        sent: 0,
        blocked: 0,
        reasons: BTreeMap::new(),
    }
}

fn print_report(scenarios: &[Scenario], exposure: &Exposure) {
    println!("What Vigil blocked");
    println!("{:<28} {:>5} {:>8}  why", "traffic", "sent", "blocked");
    for s in scenarios {
        let mut reasons = s.reasons.iter().map(|(r, n)| format!("{n} × {r}"));
        println!(
            "{:<28} {:>5} {:>8}  {}",
            s.name,
            s.sent,
            s.blocked,
            reasons.next().unwrap_or_else(|| "-".into())
        );
        for more in reasons {
            println!("{:<28} {:>5} {:>8}  {more}", "", "", "");
        }
    }
    println!();
    println!("Endpoints reached from public clients, as Vigil's inventory counted them");
    println!(
        "{:<24} {:>8} {:>8} {:>12} {:>7} {:>8}",
        "endpoint", "requests", "clients", "credentials", "denied", "through"
    );
    for endpoint in exposure.endpoints.iter().filter(|e| e.total.public > 0) {
        let e = &endpoint.total;
        let denied: u64 = e.denials.values().sum();
        println!(
            "{:<24} {:>8} {:>8} {:>12} {:>7} {:>8}",
            format!("{} {}", e.method, e.route),
            e.public,
            endpoint.public_clients_estimate,
            e.authenticated,
            denied,
            e.requests - denied
        );
    }
    println!();
    println!("Findings (besides the denials above)");
    let denials = vigil_report::FindingKind::ClientDenied.as_str();
    for finding in exposure
        .recent_findings
        .iter()
        .filter(|f| f.kind != denials)
    {
        let about = finding
            .endpoint
            .as_ref()
            .map(|e| format!(" {} {}", e.method, e.route))
            .unwrap_or_default();
        println!(
            "{:<27} {}{about}: {}",
            finding.kind, finding.source, finding.detail
        );
    }
}

/// The sample shop: answers its five endpoints; what reaches it is counted by Vigil's
/// inventory, not here.
struct Shop {
    addr: SocketAddr,
}

impl Shop {
    async fn start() -> anyhow::Result<Shop> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service_fn(shop))
                        .await;
                });
            }
        });
        Ok(Shop { addr })
    }
}

async fn shop(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let status = match (method.as_str(), path.as_str()) {
        ("POST", "/login") => {
            let good = serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v["password"] == "correct-horse");
            if good {
                200
            } else {
                401
            }
        }
        ("POST", "/cart/items") => 201,
        ("POST", "/checkout") | ("GET", "/admin/stats") => 200,
        ("GET", p) if p.starts_with("/users/") => {
            let known = p["/users/".len()..].parse::<u32>().is_ok_and(|id| id <= 12);
            if known {
                200
            } else {
                404
            }
        }
        _ => 404,
    };
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    Ok(response)
}
