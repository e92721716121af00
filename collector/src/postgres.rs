//! The collector's PostgreSQL store, for when one SQLite file is outgrown or several collectors
//! serve one fleet: they share the database, and a report is counted once whichever of them
//! receives it (and its retries). A few connections made on demand, each with its prepared
//! statements; schema migrations kept here in code, applied at start under an advisory lock.

use super::config::PostgresUrl;
use super::fixes;
use super::rows::{self, Columns, GuardCounts};
use super::store::{
    Applied, Cutoffs, DeniedClient, Dropped, Endpoint, EndpointQuery, FindingQuery, FindingRecord,
    FleetVersions, Pruned, Service, Store, StoreError, Totals, VersionTraffic,
};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row, Statement};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::ClientConfig;
use vigil_report::sketch::{stable_hash, Sketch};
use vigil_report::{EndpointDelta, Finding, FindingKind, Report};

/// Connections kept: ingest and API queries run beside each other, and transactions of
/// different instances proceed in parallel.
const CONNECTIONS: usize = 8;

/// How long connecting may take when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Times a write transaction is tried when PostgreSQL aborts it for a deadlock or a
/// serialization failure, which a retry resolves.
const ATTEMPTS: usize = 5;

/// The advisory lock (two-key form, apart from the per-instance one-key locks) that makes
/// collectors starting at once apply migrations one after the other.
const MIGRATION_LOCK: (i32, i32) = (0x5669_6769, 1);

/// Schema migrations, in order; the table `vigil_schema` lists those applied. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE services (
    name TEXT PRIMARY KEY,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    -- hash of the documented endpoint list last stored, to skip rewriting an unchanged one
    documented_hash BIGINT
);
CREATE TABLE instances (
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    reports BIGINT NOT NULL,
    dropped_findings BIGINT NOT NULL,
    dropped_endpoints BIGINT NOT NULL,
    dropped_reports BIGINT NOT NULL,
    -- sequence numbers up to here were applied but their ranges forgotten by retention
    pruned_through BIGINT,
    PRIMARY KEY (service, instance)
);
-- idempotency keys: the sequence ranges applied per instance, never overlapping
CREATE TABLE applied (
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    first BIGINT NOT NULL,
    last BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (service, instance, first)
);
CREATE INDEX applied_received ON applied (received_ms);
CREATE TABLE endpoints (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    requests BIGINT NOT NULL,
    public BIGINT NOT NULL,
    authenticated BIGINT NOT NULL,
    bearer BIGINT NOT NULL,
    basic BIGINT NOT NULL,
    cookie BIGINT NOT NULL,
    api_key BIGINT NOT NULL,
    s1xx BIGINT NOT NULL,
    s2xx BIGINT NOT NULL,
    s3xx BIGINT NOT NULL,
    s4xx BIGINT NOT NULL,
    s5xx BIGINT NOT NULL,
    unauthenticated_success BIGINT NOT NULL,
    public_unauthenticated_success BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    -- HyperLogLog registers of distinct public clients, NULL while there is none
    public_clients BYTEA,
    shadow BOOLEAN NOT NULL,
    internal_only BOOLEAN NOT NULL,
    PRIMARY KEY (service, method, route)
);
CREATE INDEX endpoints_last_seen ON endpoints (last_seen_ms);
CREATE TABLE endpoint_instances (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    instance TEXT NOT NULL,
    requests BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (service, method, route, instance)
);
CREATE INDEX endpoint_instances_instance ON endpoint_instances (service, instance);
CREATE TABLE denials (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    guard TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (service, method, route, guard)
);
-- denials monitor-mode guards would have made, apart from the enforced ones in denials
CREATE TABLE monitor_denials (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    guard TEXT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (service, method, route, guard)
);
CREATE TABLE documented (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    PRIMARY KEY (service, method, route)
);
-- findings folded across the fleet; '' stands for an absent endpoint or client, as in the
-- SQLite store, so that the key is unique
CREATE TABLE findings (
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    client TEXT NOT NULL,
    detail TEXT NOT NULL,
    instance TEXT NOT NULL,
    count BIGINT NOT NULL,
    first_at_ms BIGINT NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (service, kind, source, method, route, client)
);
CREATE INDEX findings_at ON findings (at_ms);
"#,
    r#"
-- the version of each instance's latest report, NULL when it carried none
ALTER TABLE instances ADD COLUMN version TEXT;
CREATE TABLE releases (
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (service, version)
);
-- requests per endpoint, instance and version, split by the newest version of the service
-- known when they were counted; '' stands for no version, as in the SQLite store
CREATE TABLE version_traffic (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    instance TEXT NOT NULL,
    version TEXT NOT NULL,
    fleet_newest TEXT NOT NULL,
    requests BIGINT NOT NULL,
    public BIGINT NOT NULL,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    PRIMARY KEY (service, method, route, instance, version, fleet_newest)
);
CREATE INDEX version_traffic_instance ON version_traffic (service, instance);
"#,
];

/// One connection and the statements prepared on it.
struct Connection {
    client: Client,
    statements: HashMap<String, Statement>,
}

/// PostgreSQL storage.
pub struct PostgresStore {
    /// Where to connect, password included.
    config: postgres::Config,
    /// With `sslmode=require`: how the server's certificate is verified.
    tls: Option<Arc<ClientConfig>>,
    /// The URL without its password, for messages.
    url: String,
    /// Connections, made when first needed and made again when PostgreSQL closed them.
    slots: Vec<Mutex<Option<Connection>>>,
    /// Round-robin start for picking a slot.
    next_slot: AtomicUsize,
}

impl Columns for Row {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn nullable_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn integer(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.try_get(i)?)
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.try_get(i)?)
    }
}

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        StoreError::Database(describe(&error))
    }
}

/// The error with PostgreSQL's own message, which `postgres::Error`'s text leaves out for
/// some kinds, or with its causes (a TLS handshake says why it failed only there).
fn describe(error: &postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = inner.source();
    }
    text
}

impl PostgresStore {
    /// Connects to `url` and brings the schema up to date; several collectors may do so at
    /// once.
    pub fn open(url: &PostgresUrl) -> Result<PostgresStore, StoreError> {
        let mut config: postgres::Config = url
            .secret()
            .parse()
            .map_err(|e: postgres::Error| StoreError::Database(format!("{url}: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("vigil-collector");
        }
        let store = PostgresStore {
            config,
            tls: url.tls().cloned(),
            url: url.to_string(),
            slots: (0..CONNECTIONS).map(|_| Mutex::new(None)).collect(),
            next_slot: AtomicUsize::new(0),
        };
        let mut slot = store.connection()?;
        let connection = slot.as_mut().expect("connected");
        migrate(&mut connection.client).map_err(|e| store.named(e))?;
        drop(slot);
        Ok(store)
    }

    /// A connection of the pool, made (again) when absent or closed.
    fn connection(&self) -> Result<MutexGuard<'_, Option<Connection>>, StoreError> {
        let start = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let free = (0..self.slots.len())
            .find_map(|i| self.slots[(start + i) % self.slots.len()].try_lock().ok());
        let mut slot = match free {
            Some(slot) => slot,
            None => self.slots[start % self.slots.len()]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        };
        if slot.as_ref().is_none_or(|c| c.client.is_closed()) {
            *slot = None;
            let client = match &self.tls {
                Some(tls) => self.config.connect(MakeRustlsConnect::new((**tls).clone())),
                None => self.config.connect(NoTls),
            }
            .map_err(|e| self.named(StoreError::from(e)))?;
            *slot = Some(Connection {
                client,
                statements: HashMap::new(),
            });
        }
        Ok(slot)
    }

    /// Runs `work` in a transaction, again when PostgreSQL aborted it for a deadlock or a
    /// serialization failure between concurrent writers.
    fn write<T>(
        &self,
        mut work: impl FnMut(&mut Session<'_, postgres::Transaction<'_>>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.connection()?;
        let connection = slot.as_mut().expect("connected");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tx = connection.client.transaction()?;
            let outcome = {
                let mut session = Session {
                    client: &mut tx,
                    statements: &mut connection.statements,
                    retry: false,
                };
                let outcome = work(&mut session);
                (outcome, session.retry)
            };
            match outcome {
                (Ok(value), _) => match tx.commit() {
                    Ok(()) => return Ok(value),
                    Err(e) if retryable(&e) && attempt < ATTEMPTS => continue,
                    Err(e) => return Err(e.into()),
                },
                (Err(_), true) if attempt < ATTEMPTS => {
                    drop(tx);
                    continue;
                }
                (Err(e), _) => return Err(e),
            }
        }
    }

    /// Runs `work` on a connection outside any explicit transaction.
    fn read<T>(
        &self,
        work: impl FnOnce(&mut Session<'_, Client>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.connection()?;
        let connection = slot.as_mut().expect("connected");
        work(&mut Session {
            client: &mut connection.client,
            statements: &mut connection.statements,
            retry: false,
        })
    }

    fn named(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Database(message) => {
                StoreError::Database(format!("database {}: {message}", self.url))
            }
            conflict => conflict,
        }
    }
}

/// Whether PostgreSQL asks for the transaction to be run again.
fn retryable(error: &postgres::Error) -> bool {
    error.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    // Held until commit: a second collector starting now waits here, then finds the
    // migrations applied.
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&MIGRATION_LOCK.0, &MIGRATION_LOCK.1],
    )?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS vigil_schema (
             version INTEGER PRIMARY KEY,
             applied_ms BIGINT NOT NULL
         )",
    )?;
    let version: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM vigil_schema", &[])?
        .get(0);
    let version = version.max(0) as usize;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "schema version {version} is newer than this build knows ({}); use a newer vigil",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.batch_execute(migration)?;
        tx.execute(
            "INSERT INTO vigil_schema (version, applied_ms)
             VALUES ($1, (extract(epoch FROM now()) * 1000)::bigint)",
            &[&((i + 1) as i32)],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// A connection or transaction with the connection's prepared statements.
struct Session<'a, C: GenericClient> {
    client: &'a mut C,
    statements: &'a mut HashMap<String, Statement>,
    /// Set when a statement failed in a way that running the transaction again resolves.
    retry: bool,
}

type Params<'p> = [&'p (dyn ToSql + Sync)];

impl<C: GenericClient> Session<'_, C> {
    fn statement(&mut self, sql: &str) -> Result<Statement, StoreError> {
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql)?;
        self.statements.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }

    fn noted<T>(&mut self, result: Result<T, postgres::Error>) -> Result<T, StoreError> {
        result.map_err(|e| {
            self.retry |= retryable(&e);
            e.into()
        })
    }

    fn execute(&mut self, sql: &str, params: &Params<'_>) -> Result<u64, StoreError> {
        let statement = self.statement(sql)?;
        let result = self.client.execute(&statement, params);
        self.noted(result)
    }

    fn query(&mut self, sql: &str, params: &Params<'_>) -> Result<Vec<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let result = self.client.query(&statement, params);
        self.noted(result)
    }

    fn query_opt(&mut self, sql: &str, params: &Params<'_>) -> Result<Option<Row>, StoreError> {
        let statement = self.statement(sql)?;
        let result = self.client.query_opt(&statement, params);
        self.noted(result)
    }

    fn query_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, StoreError> {
        let statement = self.statement(sql)?;
        let result = self.client.query_one(&statement, params);
        self.noted(result)
    }
}

/// PostgreSQL's BIGINT is signed; counts beyond `i64::MAX` saturate.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    value.max(0) as u64
}

/// The same hash the SQLite store keeps, so both skip an unchanged list alike.
fn documented_hash(report: &Report) -> i64 {
    let mut list: Vec<String> = report
        .documented
        .iter()
        .map(|e| format!("{} {}\n", e.method, e.route))
        .collect();
    list.sort();
    stable_hash(list.concat().as_bytes()) as i64
}

/// A finding's row key: what the findings table's primary key holds besides the service.
fn finding_key(finding: &Finding) -> (&str, &str, &str, &str, &str) {
    let (method, route) = finding
        .endpoint
        .as_ref()
        .map_or(("", ""), |e| (e.method.as_str(), e.route.as_str()));
    (
        finding.kind.as_str(),
        finding.source.as_str(),
        method,
        route,
        finding.client.as_deref().unwrap_or(""),
    )
}

/// Findings of one report with the same key folded into one row, since one statement may
/// not update a row twice.
struct FoldedFinding<'a> {
    key: (&'a str, &'a str, &'a str, &'a str, &'a str),
    detail: &'a str,
    count: u64,
    first_at_ms: u64,
    at_ms: u64,
}

/// `findings`, sorted by key, folded as the store folds them across reports: counts summed,
/// the latest detail kept.
fn fold_findings<'a>(findings: &[&'a Finding]) -> Vec<FoldedFinding<'a>> {
    let mut folded: Vec<FoldedFinding<'a>> = Vec::with_capacity(findings.len());
    for finding in findings {
        let key = finding_key(finding);
        match folded.last_mut() {
            Some(last) if last.key == key => {
                last.count += finding.count;
                last.first_at_ms = last.first_at_ms.min(finding.at_ms);
                if finding.at_ms >= last.at_ms {
                    last.at_ms = finding.at_ms;
                    last.detail = &finding.detail;
                }
            }
            _ => folded.push(FoldedFinding {
                key,
                detail: &finding.detail,
                count: finding.count,
                first_at_ms: finding.at_ms,
                at_ms: finding.at_ms,
            }),
        }
    }
    folded
}

/// The key of the advisory lock that serialises reports of one instance, whichever collector
/// receives them. Two instances sharing a key only wait for each other.
fn instance_lock(service: &str, instance: &str) -> i64 {
    stable_hash(format!("{service}\0{instance}").as_bytes()) as i64
}

impl Store for PostgresStore {
    fn apply(&self, report: &Report, received_ms: u64) -> Result<Applied, StoreError> {
        let (first, last) = (report.sequence.first, report.sequence.last);
        let (service, instance) = (report.service.as_str(), report.instance.as_str());
        let received = int(received_ms);
        // Rows are locked in one order by every transaction (endpoints by key, then findings
        // by key, then the service), so concurrent reports wait for each other and never
        // deadlock.
        let mut endpoints: Vec<_> = report.endpoints.iter().filter(|e| e.requests > 0).collect();
        endpoints.sort_by(|a, b| (&a.method, &a.route).cmp(&(&b.method, &b.route)));
        let mut findings: Vec<_> = report.findings.iter().collect();
        findings.sort_by(|a, b| finding_key(a).cmp(&finding_key(b)));
        self.write(|tx| {
            let conflict = |applied_first: u64, applied_last: u64| StoreError::Conflict {
                instance: instance.to_string(),
                first,
                last,
                applied_first,
                applied_last,
            };
            // Another collector applying a report of this instance holds the lock until it
            // commits; after it, this transaction's checks see that report's key.
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&instance_lock(service, instance)],
            )?;
            let pruned_through: Option<i64> = tx
                .query_opt(
                    "SELECT pruned_through FROM instances WHERE service = $1 AND instance = $2",
                    &[&service, &instance],
                )?
                .and_then(|row| row.get(0));
            if let Some(pruned) = pruned_through.map(unsigned) {
                if last <= pruned {
                    return Ok(Applied::Duplicate);
                }
                if first <= pruned {
                    return Err(conflict(0, pruned));
                }
            }
            // Applied ranges never overlap, so the one starting last at or before our end is
            // the only one that can overlap us.
            let previous = tx.query_opt(
                "SELECT first, last FROM applied WHERE service = $1 AND instance = $2 AND first <= $3
                 ORDER BY first DESC LIMIT 1",
                &[&service, &instance, &int(last)],
            )?;
            if let Some(row) = previous {
                let (applied_first, applied_last) =
                    (unsigned(row.get(0)), unsigned(row.get(1)));
                if (applied_first, applied_last) == (first, last) {
                    return Ok(Applied::Duplicate);
                }
                if applied_last >= first {
                    return Err(conflict(applied_first, applied_last));
                }
            }
            tx.execute(
                "INSERT INTO applied (service, instance, first, last, received_ms)
                 VALUES ($1, $2, $3, $4, $5)",
                &[&service, &instance, &int(first), &int(last), &received],
            )?;
            tx.execute(
                "INSERT INTO instances (service, instance, first_seen_ms, last_seen_ms, reports,
                     dropped_findings, dropped_endpoints, dropped_reports, version)
                 VALUES ($1, $2, $3, $3, 1, $4, $5, $6, $7)
                 ON CONFLICT (service, instance) DO UPDATE SET
                     last_seen_ms = greatest(instances.last_seen_ms, excluded.last_seen_ms),
                     reports = instances.reports + 1,
                     version = excluded.version,
                     dropped_findings = instances.dropped_findings + excluded.dropped_findings,
                     dropped_endpoints = instances.dropped_endpoints + excluded.dropped_endpoints,
                     dropped_reports = instances.dropped_reports + excluded.dropped_reports",
                &[
                    &service,
                    &instance,
                    &received,
                    &int(report.dropped.findings),
                    &int(report.dropped.endpoints),
                    &int(report.dropped.reports),
                    &report.version,
                ],
            )?;
            if let Some(version) = &report.version {
                tx.execute(
                    "INSERT INTO releases AS r (service, version, first_seen_ms, last_seen_ms)
                     VALUES ($1, $2, $3, $3)
                     ON CONFLICT (service, version) DO UPDATE SET
                         last_seen_ms = greatest(r.last_seen_ms, excluded.last_seen_ms)",
                    &[&service, version, &received],
                )?;
            }
            let versions: Vec<String> = tx
                .query("SELECT version FROM releases WHERE service = $1", &[&service])?
                .iter()
                .map(|row| row.get(0))
                .collect();
            // While the service reports no versions there is no fix to verify, and no row to
            // keep.
            let fleet_newest = fixes::newest(versions.iter().map(String::as_str));

            // One statement per table, the report's rows as arrays (`unnest`), so that a
            // report costs a round trip per table rather than one per row. `ORDER BY ord`
            // keeps the lock order of the sorted arrays.
            if !endpoints.is_empty() {
                let text = |f: fn(&EndpointDelta) -> &str| -> Vec<&str> {
                    endpoints.iter().map(|e| f(e)).collect()
                };
                let number = |f: fn(&EndpointDelta) -> u64| -> Vec<i64> {
                    endpoints.iter().map(|e| int(f(e))).collect()
                };
                let flag = |f: fn(&EndpointDelta) -> bool| -> Vec<bool> {
                    endpoints.iter().map(|e| f(e)).collect()
                };
                let (methods, routes) = (text(|e| &e.method), text(|e| &e.route));
                let sketches: Vec<Option<&[u8]>> =
                    endpoints.iter().map(|e| e.public_clients.to_bytes()).collect();
                // The upsert locks each row; `xmax = 0` tells an inserted row from an updated
                // one, whose stored sketch is then merged with the report's.
                let upserted = tx.query(
                    "INSERT INTO endpoints AS e (service, method, route, requests, public,
                         authenticated, bearer, basic, cookie, api_key, s1xx, s2xx, s3xx, s4xx,
                         s5xx, unauthenticated_success, public_unauthenticated_success,
                         first_seen_ms, last_seen_ms, public_clients, shadow, internal_only)
                     SELECT $1, method, route, requests, public, authenticated, bearer, basic,
                         cookie, api_key, s1xx, s2xx, s3xx, s4xx, s5xx, unauthenticated_success,
                         public_unauthenticated_success, first_seen_ms, last_seen_ms,
                         public_clients, shadow, internal_only
                     FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[],
                         $11::bigint[], $12::bigint[], $13::bigint[], $14::bigint[],
                         $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
                         $19::bigint[], $20::bytea[], $21::boolean[], $22::boolean[])
                         WITH ORDINALITY AS u(method, route, requests, public, authenticated,
                         bearer, basic, cookie, api_key, s1xx, s2xx, s3xx, s4xx, s5xx,
                         unauthenticated_success, public_unauthenticated_success,
                         first_seen_ms, last_seen_ms, public_clients, shadow, internal_only,
                         ord)
                     ORDER BY ord
                     ON CONFLICT (service, method, route) DO UPDATE SET
                         requests = e.requests + excluded.requests,
                         public = e.public + excluded.public,
                         authenticated = e.authenticated + excluded.authenticated,
                         bearer = e.bearer + excluded.bearer,
                         basic = e.basic + excluded.basic,
                         cookie = e.cookie + excluded.cookie,
                         api_key = e.api_key + excluded.api_key,
                         s1xx = e.s1xx + excluded.s1xx,
                         s2xx = e.s2xx + excluded.s2xx,
                         s3xx = e.s3xx + excluded.s3xx,
                         s4xx = e.s4xx + excluded.s4xx,
                         s5xx = e.s5xx + excluded.s5xx,
                         unauthenticated_success =
                             e.unauthenticated_success + excluded.unauthenticated_success,
                         public_unauthenticated_success = e.public_unauthenticated_success
                             + excluded.public_unauthenticated_success,
                         first_seen_ms = least(e.first_seen_ms, excluded.first_seen_ms),
                         last_seen_ms = greatest(e.last_seen_ms, excluded.last_seen_ms),
                         shadow = excluded.shadow,
                         internal_only = excluded.internal_only
                     RETURNING method, route, xmax = 0, public_clients",
                    &[
                        &service,
                        &methods,
                        &routes,
                        &number(|e| e.requests),
                        &number(|e| e.public),
                        &number(|e| e.authenticated),
                        &number(|e| e.credentials.bearer),
                        &number(|e| e.credentials.basic),
                        &number(|e| e.credentials.cookie),
                        &number(|e| e.credentials.api_key),
                        &number(|e| e.status.informational),
                        &number(|e| e.status.success),
                        &number(|e| e.status.redirection),
                        &number(|e| e.status.client_error),
                        &number(|e| e.status.server_error),
                        &number(|e| e.unauthenticated_success),
                        &number(|e| e.public_unauthenticated_success),
                        &number(|e| e.first_seen_ms),
                        &number(|e| e.last_seen_ms),
                        &sketches,
                        &flag(|e| e.shadow),
                        &flag(|e| e.internal_only),
                    ],
                )?;
                let reported: HashMap<(&str, &str), &EndpointDelta> = endpoints
                    .iter()
                    .map(|e| ((e.method.as_str(), e.route.as_str()), *e))
                    .collect();
                let (mut merged_methods, mut merged_routes, mut merged) =
                    (Vec::new(), Vec::new(), Vec::new());
                for row in &upserted {
                    let (method, route): (String, String) = (row.get(0), row.get(1));
                    let inserted: bool = row.get(2);
                    let Some(delta) = reported.get(&(method.as_str(), route.as_str())) else {
                        continue;
                    };
                    if inserted || delta.public_clients.is_empty() {
                        continue;
                    }
                    let stored: Option<Vec<u8>> = row.get(3);
                    let mut sketch = stored
                        .and_then(|bytes| Sketch::from_bytes(&bytes))
                        .unwrap_or_default();
                    sketch.merge(&delta.public_clients);
                    merged.push(sketch.to_bytes().map(<[u8]>::to_vec));
                    merged_methods.push(method);
                    merged_routes.push(route);
                }
                if !merged.is_empty() {
                    tx.execute(
                        "UPDATE endpoints e SET public_clients = u.sketch
                         FROM unnest($2::text[], $3::text[], $4::bytea[]) AS u(method, route, sketch)
                         WHERE e.service = $1 AND e.method = u.method AND e.route = u.route",
                        &[&service, &merged_methods, &merged_routes, &merged],
                    )?;
                }
                tx.execute(
                    "INSERT INTO endpoint_instances AS i
                         (service, method, route, instance, requests, last_seen_ms)
                     SELECT $1, method, route, $2, requests, last_seen_ms
                     FROM unnest($3::text[], $4::text[], $5::bigint[], $6::bigint[])
                         WITH ORDINALITY AS u(method, route, requests, last_seen_ms, ord)
                     ORDER BY ord
                     ON CONFLICT (service, method, route, instance) DO UPDATE SET
                         requests = i.requests + excluded.requests,
                         last_seen_ms = greatest(i.last_seen_ms, excluded.last_seen_ms)",
                    &[
                        &service,
                        &instance,
                        &methods,
                        &routes,
                        &number(|e| e.requests),
                        &number(|e| e.last_seen_ms),
                    ],
                )?;
                if let Some(newest) = fleet_newest {
                    tx.execute(
                        "INSERT INTO version_traffic AS t (service, method, route, instance,
                             version, fleet_newest, requests, public, first_seen_ms, last_seen_ms)
                         SELECT $1, method, route, $2, $3, $4, requests, public, first_seen_ms,
                             last_seen_ms
                         FROM unnest($5::text[], $6::text[], $7::bigint[], $8::bigint[],
                             $9::bigint[], $10::bigint[])
                             WITH ORDINALITY AS u(method, route, requests, public,
                             first_seen_ms, last_seen_ms, ord)
                         ORDER BY ord
                         ON CONFLICT (service, method, route, instance, version, fleet_newest)
                         DO UPDATE SET
                             requests = t.requests + excluded.requests,
                             public = t.public + excluded.public,
                             first_seen_ms = least(t.first_seen_ms, excluded.first_seen_ms),
                             last_seen_ms = greatest(t.last_seen_ms, excluded.last_seen_ms)",
                        &[
                            &service,
                            &instance,
                            &report.version.as_deref().unwrap_or(""),
                            &newest,
                            &methods,
                            &routes,
                            &number(|e| e.requests),
                            &number(|e| e.public),
                            &number(|e| e.first_seen_ms),
                            &number(|e| e.last_seen_ms),
                        ],
                    )?;
                }
                for (table, counts) in [
                    ("denials", (|e| &e.denials) as fn(&EndpointDelta) -> &BTreeMap<String, u64>),
                    ("monitor_denials", |e| &e.monitor_denials),
                ] {
                    let (mut methods, mut routes, mut guards, mut numbers) =
                        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                    for endpoint in &endpoints {
                        for (guard, count) in counts(endpoint) {
                            methods.push(endpoint.method.as_str());
                            routes.push(endpoint.route.as_str());
                            guards.push(guard.as_str());
                            numbers.push(int(*count));
                        }
                    }
                    if methods.is_empty() {
                        continue;
                    }
                    tx.execute(
                        &format!(
                            "INSERT INTO {table} AS d (service, method, route, guard, count)
                             SELECT $1, method, route, guard, count
                             FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[])
                                 WITH ORDINALITY AS u(method, route, guard, count, ord)
                             ORDER BY ord
                             ON CONFLICT (service, method, route, guard)
                             DO UPDATE SET count = d.count + excluded.count"
                        ),
                        &[&service, &methods, &routes, &guards, &numbers],
                    )?;
                }
            }

            let findings = fold_findings(&findings);
            if !findings.is_empty() {
                let part = |i: usize| -> Vec<&str> {
                    findings
                        .iter()
                        .map(|f| [f.key.0, f.key.1, f.key.2, f.key.3, f.key.4, f.detail][i])
                        .collect()
                };
                let number = |f: fn(&FoldedFinding<'_>) -> u64| -> Vec<i64> {
                    findings.iter().map(|x| int(f(x))).collect()
                };
                tx.execute(
                    "INSERT INTO findings AS f (service, kind, source, method, route, client,
                         detail, instance, count, first_at_ms, at_ms)
                     SELECT $1, kind, source, method, route, client, detail, $2, count,
                         first_at_ms, at_ms
                     FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::text[], $9::bigint[], $10::bigint[], $11::bigint[])
                         WITH ORDINALITY AS u(kind, source, method, route, client, detail, count,
                         first_at_ms, at_ms, ord)
                     ORDER BY ord
                     ON CONFLICT (service, kind, source, method, route, client) DO UPDATE SET
                         count = f.count + excluded.count,
                         detail = CASE WHEN excluded.at_ms >= f.at_ms
                             THEN excluded.detail ELSE f.detail END,
                         instance = CASE WHEN excluded.at_ms >= f.at_ms
                             THEN excluded.instance ELSE f.instance END,
                         first_at_ms = least(f.first_at_ms, excluded.first_at_ms),
                         at_ms = greatest(f.at_ms, excluded.at_ms)",
                    &[
                        &service,
                        &instance,
                        &part(0),
                        &part(1),
                        &part(2),
                        &part(3),
                        &part(4),
                        &part(5),
                        &number(|f| f.count),
                        &number(|f| f.first_at_ms),
                        &number(|f| f.at_ms),
                    ],
                )?;
            }

            // Last, as every report of the service waits for this row until commit.
            let stored_hash: Option<i64> = tx
                .query_one(
                    "INSERT INTO services AS s (name, first_seen_ms, last_seen_ms)
                     VALUES ($1, $2, $2)
                     ON CONFLICT (name) DO UPDATE SET
                         last_seen_ms = greatest(s.last_seen_ms, excluded.last_seen_ms)
                     RETURNING documented_hash",
                    &[&service, &received],
                )?
                .get(0);
            if !report.documented.is_empty() {
                let hash = documented_hash(report);
                if stored_hash != Some(hash) {
                    tx.execute("DELETE FROM documented WHERE service = $1", &[&service])?;
                    let methods: Vec<&str> =
                        report.documented.iter().map(|e| e.method.as_str()).collect();
                    let routes: Vec<&str> =
                        report.documented.iter().map(|e| e.route.as_str()).collect();
                    tx.execute(
                        "INSERT INTO documented (service, method, route)
                         SELECT $1, method, route FROM unnest($2::text[], $3::text[])
                             AS u(method, route)
                         ON CONFLICT DO NOTHING",
                        &[&service, &methods, &routes],
                    )?;
                    tx.execute(
                        "UPDATE services SET documented_hash = $2 WHERE name = $1",
                        &[&service, &hash],
                    )?;
                }
            }
            Ok(Applied::New)
        })
    }

    fn services(&self) -> Result<Vec<Service>, StoreError> {
        self.read(|db| {
            let mut services: BTreeMap<String, Service> = BTreeMap::new();
            for row in db.query(
                "SELECT name, first_seen_ms, last_seen_ms FROM services",
                &[],
            )? {
                let name: String = row.get(0);
                services.insert(
                    name.clone(),
                    Service {
                        name,
                        first_seen_ms: unsigned(row.get(1)),
                        last_seen_ms: unsigned(row.get(2)),
                        instances: 0,
                        reports: 0,
                        endpoints: 0,
                        public_endpoints: 0,
                        zombie_endpoints: 0,
                        requests: 0,
                        findings: 0,
                        dropped: Dropped::default(),
                    },
                );
            }
            for row in db.query(
                "SELECT service, count(*), sum(reports)::bigint, sum(dropped_findings)::bigint,
                     sum(dropped_endpoints)::bigint, sum(dropped_reports)::bigint
                 FROM instances GROUP BY service",
                &[],
            )? {
                if let Some(s) = services.get_mut(row.get::<_, &str>(0)) {
                    s.instances = unsigned(row.get(1));
                    s.reports = unsigned(row.get(2));
                    s.dropped = Dropped {
                        findings: unsigned(row.get(3)),
                        endpoints: unsigned(row.get(4)),
                        reports: unsigned(row.get(5)),
                    };
                }
            }
            for row in db.query(
                "SELECT service, count(*), count(*) FILTER (WHERE public > 0),
                     sum(requests)::bigint
                 FROM endpoints GROUP BY service",
                &[],
            )? {
                if let Some(s) = services.get_mut(row.get::<_, &str>(0)) {
                    s.endpoints = unsigned(row.get(1));
                    s.public_endpoints = unsigned(row.get(2));
                    s.requests = unsigned(row.get(3));
                }
            }
            for row in db.query(
                "SELECT d.service, count(*) FROM documented d WHERE NOT EXISTS (
                     SELECT 1 FROM endpoints e
                     WHERE e.service = d.service AND e.method = d.method AND e.route = d.route)
                 GROUP BY d.service",
                &[],
            )? {
                if let Some(s) = services.get_mut(row.get::<_, &str>(0)) {
                    s.zombie_endpoints = unsigned(row.get(1));
                }
            }
            for row in db.query(
                "SELECT service, count(*) FROM findings GROUP BY service",
                &[],
            )? {
                if let Some(s) = services.get_mut(row.get::<_, &str>(0)) {
                    s.findings = unsigned(row.get(1));
                }
            }
            Ok(services.into_values().collect())
        })
    }

    fn endpoints(&self, query: &EndpointQuery) -> Result<Vec<Endpoint>, StoreError> {
        let service = query.service.as_deref();
        self.read(|db| {
            let mut per_guard = |table: &str| -> Result<GuardCounts, StoreError> {
                let mut counts = GuardCounts::new();
                let sql = format!(
                    "SELECT service, method, route, guard, count FROM {table}
                     WHERE $1::text IS NULL OR service = $1"
                );
                for row in db.query(&sql, &[&service])? {
                    rows::add_guard_count(&mut counts, &row)?;
                }
                Ok(counts)
            };
            let mut denials = per_guard("denials")?;
            let mut monitor_denials = per_guard("monitor_denials")?;

            let mut endpoints = Vec::new();
            let sql = format!(
                "SELECT {} FROM endpoints e WHERE $1::text IS NULL OR e.service = $1",
                rows::ENDPOINT_COLUMNS
            );
            for row in db.query(&sql, &[&service])? {
                endpoints.push(rows::reached_endpoint(
                    &row,
                    &mut denials,
                    &mut monitor_denials,
                )?);
            }
            for row in db.query(
                "SELECT d.service, d.method, d.route FROM documented d
                 WHERE ($1::text IS NULL OR d.service = $1) AND NOT EXISTS (
                     SELECT 1 FROM endpoints e
                     WHERE e.service = d.service AND e.method = d.method AND e.route = d.route)",
                &[&service],
            )? {
                endpoints.push(rows::zombie_endpoint(&row)?);
            }
            Ok(rows::select_endpoints(endpoints, query))
        })
    }

    fn findings(&self, query: &FindingQuery) -> Result<Vec<FindingRecord>, StoreError> {
        self.read(|db| {
            let sql = format!(
                "SELECT {} FROM findings
                 WHERE ($1::text IS NULL OR service = $1) AND ($2::text IS NULL OR kind = $2)
                     AND (NOT $3::boolean OR kind NOT IN ($5, $6))
                 ORDER BY at_ms DESC, service, kind LIMIT $4",
                rows::FINDING_COLUMNS
            );
            db.query(
                &sql,
                &[
                    &query.service,
                    &query.kind,
                    &query.without_client_denials,
                    &int(query.limit as u64),
                    &FindingKind::ClientDenied.as_str(),
                    &FindingKind::ClientWouldDeny.as_str(),
                ],
            )?
            .iter()
            .map(rows::finding)
            .collect()
        })
    }

    fn denied_clients(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeniedClient>, StoreError> {
        self.read(|db| {
            let rows = db.query(
                "SELECT service, client,
                     coalesce(sum(count) FILTER (WHERE kind = $1), 0)::bigint,
                     coalesce(array_agg(DISTINCT source) FILTER (WHERE kind = $1), '{}'),
                     coalesce(sum(count) FILTER (WHERE kind = $2), 0)::bigint,
                     coalesce(array_agg(DISTINCT source) FILTER (WHERE kind = $2), '{}'),
                     count(DISTINCT CASE WHEN method != '' THEN method || ' ' || route END),
                     max(at_ms), bool_or(kind = $5)
                 FROM findings
                 WHERE kind IN ($1, $2, $5) AND client != '' AND ($3::text IS NULL OR service = $3)
                 GROUP BY service, client
                 ORDER BY sum(count) DESC, max(at_ms) DESC LIMIT $4",
                &[
                    &FindingKind::ClientDenied.as_str(),
                    &FindingKind::ClientWouldDeny.as_str(),
                    &service,
                    &int(limit as u64),
                    &FindingKind::ClientBanned.as_str(),
                ],
            )?;
            let sorted = |mut sources: Vec<String>| {
                sources.sort();
                sources
            };
            Ok(rows
                .into_iter()
                .map(|row| DeniedClient {
                    service: row.get(0),
                    client: row.get(1),
                    denials: unsigned(row.get(2)),
                    sources: sorted(row.get(3)),
                    monitor_denials: unsigned(row.get(4)),
                    monitor_sources: sorted(row.get(5)),
                    endpoints: unsigned(row.get(6)),
                    at_ms: unsigned(row.get(7)),
                    banned: row.get(8),
                })
                .collect())
        })
    }

    fn prune(&self, cutoffs: Cutoffs) -> Result<Pruned, StoreError> {
        let (findings, instances, endpoints) = (
            int(cutoffs.findings_ms),
            int(cutoffs.instances_ms),
            int(cutoffs.endpoints_ms),
        );
        self.write(|tx| {
            let mut pruned = Pruned {
                findings: tx.execute("DELETE FROM findings WHERE at_ms < $1", &[&findings])?,
                ..Pruned::default()
            };
            pruned.keys += tx.execute(
                "DELETE FROM applied t USING instances i
                 WHERE i.service = t.service AND i.instance = t.instance AND i.last_seen_ms < $1",
                &[&instances],
            )?;
            for sql in [
                "DELETE FROM endpoint_instances t USING instances i
                 WHERE i.service = t.service AND i.instance = t.instance AND i.last_seen_ms < $1",
                "DELETE FROM version_traffic t USING instances i
                 WHERE i.service = t.service AND i.instance = t.instance AND i.last_seen_ms < $1",
                "DELETE FROM releases WHERE last_seen_ms < $1",
            ] {
                tx.execute(sql, &[&instances])?;
            }
            pruned.instances =
                tx.execute("DELETE FROM instances WHERE last_seen_ms < $1", &[&instances])?;
            // Live instances keep their recent keys; older ones collapse into a high-water
            // mark, so a very late resend is still recognised as applied.
            tx.execute(
                "UPDATE instances SET pruned_through = greatest(coalesce(instances.pruned_through, -1), old.last)
                 FROM (SELECT service, instance, max(last) AS last FROM applied
                       WHERE received_ms < $1 GROUP BY service, instance) old
                 WHERE old.service = instances.service AND old.instance = instances.instance",
                &[&instances],
            )?;
            pruned.keys +=
                tx.execute("DELETE FROM applied WHERE received_ms < $1", &[&instances])?;
            for sql in [
                "DELETE FROM denials t USING endpoints e
                 WHERE e.service = t.service AND e.method = t.method AND e.route = t.route
                     AND e.last_seen_ms < $1",
                "DELETE FROM monitor_denials t USING endpoints e
                 WHERE e.service = t.service AND e.method = t.method AND e.route = t.route
                     AND e.last_seen_ms < $1",
                "DELETE FROM endpoint_instances t USING endpoints e
                 WHERE e.service = t.service AND e.method = t.method AND e.route = t.route
                     AND e.last_seen_ms < $1",
                "DELETE FROM version_traffic WHERE last_seen_ms < $1",
            ] {
                tx.execute(sql, &[&endpoints])?;
            }
            pruned.endpoints =
                tx.execute("DELETE FROM endpoints WHERE last_seen_ms < $1", &[&endpoints])?;
            Ok(pruned)
        })
    }

    fn fleet_versions(&self, service: Option<&str>) -> Result<FleetVersions, StoreError> {
        self.read(|db| {
            let instances = format!(
                "SELECT {} FROM instances WHERE $1::text IS NULL OR service = $1
                 ORDER BY service, instance",
                rows::INSTANCE_VERSION_COLUMNS
            );
            let releases = format!(
                "SELECT {} FROM releases WHERE $1::text IS NULL OR service = $1
                 ORDER BY service, first_seen_ms, version",
                rows::RELEASE_COLUMNS
            );
            Ok(FleetVersions {
                instances: db
                    .query(&instances, &[&service])?
                    .iter()
                    .map(rows::instance_version)
                    .collect::<Result<_, _>>()?,
                releases: db
                    .query(&releases, &[&service])?
                    .iter()
                    .map(rows::release)
                    .collect::<Result<_, _>>()?,
            })
        })
    }

    fn version_traffic(
        &self,
        service: &str,
        method: &str,
        route: &str,
    ) -> Result<Vec<VersionTraffic>, StoreError> {
        self.read(|db| {
            let sql = format!(
                "SELECT {} FROM version_traffic WHERE service = $1 AND method = $2 AND route = $3
                 ORDER BY instance, version, fleet_newest",
                rows::VERSION_TRAFFIC_COLUMNS
            );
            db.query(&sql, &[&service, &method, &route])?
                .iter()
                .map(rows::version_traffic)
                .collect()
        })
    }

    fn totals(&self) -> Result<Totals, StoreError> {
        self.read(|db| {
            let row = db.query_one(
                "SELECT (SELECT count(*) FROM services),
                     (SELECT count(*) FROM endpoints) + (SELECT count(*) FROM documented d
                      WHERE NOT EXISTS (SELECT 1 FROM endpoints e
                      WHERE e.service = d.service AND e.method = d.method AND e.route = d.route))",
                &[],
            )?;
            Ok(Totals {
                services: unsigned(row.get(0)),
                endpoints: unsigned(row.get(1)),
            })
        })
    }
}
