//! The collector's default store: one SQLite file in WAL mode, one writer connection and a few
//! readers, schema migrations kept here in code.

use super::fixes;
use super::rows::{self, Columns, GuardCounts};
use super::store::{
    Applied, Cutoffs, DeniedClient, Dropped, Endpoint, EndpointQuery, FindingQuery, FindingRecord,
    FleetVersions, Pruned, Service, Store, StoreError, Totals, VersionTraffic,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use vigil_report::sketch::{stable_hash, Sketch};
use vigil_report::{FindingKind, Report};

/// Reader connections: API queries run beside ingest, which WAL allows.
const READERS: usize = 2;

/// Schema migrations, in order; `PRAGMA user_version` counts those applied. Never edit one
/// that has shipped: add the next.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE services (
    name TEXT PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    -- hash of the documented endpoint list last stored, to skip rewriting an unchanged one
    documented_hash INTEGER
);
CREATE TABLE instances (
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    reports INTEGER NOT NULL,
    dropped_findings INTEGER NOT NULL,
    dropped_endpoints INTEGER NOT NULL,
    dropped_reports INTEGER NOT NULL,
    -- sequence numbers up to here were applied but their ranges forgotten by retention
    pruned_through INTEGER,
    PRIMARY KEY (service, instance)
);
-- idempotency keys: the sequence ranges applied per instance, never overlapping
CREATE TABLE applied (
    service TEXT NOT NULL,
    instance TEXT NOT NULL,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (service, instance, first)
);
CREATE INDEX applied_received ON applied (received_ms);
CREATE TABLE endpoints (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    requests INTEGER NOT NULL,
    public INTEGER NOT NULL,
    authenticated INTEGER NOT NULL,
    bearer INTEGER NOT NULL,
    basic INTEGER NOT NULL,
    cookie INTEGER NOT NULL,
    api_key INTEGER NOT NULL,
    s1xx INTEGER NOT NULL,
    s2xx INTEGER NOT NULL,
    s3xx INTEGER NOT NULL,
    s4xx INTEGER NOT NULL,
    s5xx INTEGER NOT NULL,
    unauthenticated_success INTEGER NOT NULL,
    public_unauthenticated_success INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    -- HyperLogLog registers of distinct public clients, NULL while there is none
    public_clients BLOB,
    shadow INTEGER NOT NULL,
    internal_only INTEGER NOT NULL,
    PRIMARY KEY (service, method, route)
);
CREATE TABLE endpoint_instances (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    instance TEXT NOT NULL,
    requests INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (service, method, route, instance)
);
CREATE TABLE denials (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    guard TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (service, method, route, guard)
);
CREATE TABLE documented (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    PRIMARY KEY (service, method, route)
);
-- findings folded across the fleet; '' stands for an absent endpoint or client so that the
-- key is unique (SQLite treats NULLs as distinct)
CREATE TABLE findings (
    service TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    client TEXT NOT NULL,
    detail TEXT NOT NULL,
    instance TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_at_ms INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (service, kind, source, method, route, client)
);
CREATE INDEX findings_at ON findings (at_ms);
"#,
    r#"
-- denials monitor-mode guards would have made, apart from the enforced ones in denials
CREATE TABLE monitor_denials (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    guard TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (service, method, route, guard)
);
"#,
    r#"
-- the version of each instance's latest report, NULL when it carried none
ALTER TABLE instances ADD COLUMN version TEXT;
CREATE TABLE releases (
    service TEXT NOT NULL,
    version TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (service, version)
);
-- requests per endpoint, instance and version, split by the newest version of the service
-- known when they were counted; '' stands for no version
CREATE TABLE version_traffic (
    service TEXT NOT NULL,
    method TEXT NOT NULL,
    route TEXT NOT NULL,
    instance TEXT NOT NULL,
    version TEXT NOT NULL,
    fleet_newest TEXT NOT NULL,
    requests INTEGER NOT NULL,
    public INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    PRIMARY KEY (service, method, route, instance, version, fleet_newest)
);
CREATE INDEX version_traffic_instance ON version_traffic (service, instance);
"#,
];

/// SQLite storage.
pub struct SqliteStore {
    /// The one connection that writes, so transactions never contend for the write lock.
    writer: Mutex<Connection>,
    /// Read-only connections for the API.
    readers: Vec<Mutex<Connection>>,
    /// Round-robin start for picking a reader.
    next_reader: AtomicUsize,
    /// The database file, for messages.
    path: PathBuf,
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Result<String, StoreError> {
        Ok(self.get(i)?)
    }
    fn nullable_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        Ok(self.get(i)?)
    }
    fn integer(&self, i: usize) -> Result<i64, StoreError> {
        Ok(self.get(i)?)
    }
    fn flag(&self, i: usize) -> Result<bool, StoreError> {
        Ok(self.get(i)?)
    }
    fn bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get(i)?)
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Database(error.to_string())
    }
}

impl SqliteStore {
    /// Opens (creating when absent) the database at `path`, switches it to WAL and brings its
    /// schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let named =
            |e: rusqlite::Error| StoreError::Database(format!("database {}: {e}", path.display()));
        let mut writer = Connection::open(path).map_err(named)?;
        writer.busy_timeout(Duration::from_secs(5)).map_err(named)?;
        let mode: String = writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(named)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "database {}: cannot switch to WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        // In WAL mode NORMAL loses no committed transaction on a process crash; only a power
        // loss can take back the last commits, which sidecars would then resend.
        writer
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(named)?;
        migrate(&mut writer, path)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(named)?;
            reader.busy_timeout(Duration::from_secs(5)).map_err(named)?;
            readers.push(Mutex::new(reader));
        }
        Ok(SqliteStore {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        self.writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(reader) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return reader;
            }
        }
        self.readers[start % self.readers.len()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn migrate(connection: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let version: usize = connection.query_row("PRAGMA user_version", [], |row| {
        row.get::<_, i64>(0).map(|v| v.max(0) as usize)
    })?;
    if version > MIGRATIONS.len() {
        return Err(StoreError::Database(format!(
            "database {}: schema version {version} is newer than this build knows ({}); use a newer vigil",
            path.display(),
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(version) {
        let tx = connection.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// SQLite integers are signed; counts beyond `i64::MAX` saturate.
fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn unsigned(value: i64) -> u64 {
    value.max(0) as u64
}

fn documented_hash(report: &Report) -> i64 {
    let mut list: Vec<String> = report
        .documented
        .iter()
        .map(|e| format!("{} {}\n", e.method, e.route))
        .collect();
    list.sort();
    stable_hash(list.concat().as_bytes()) as i64
}

impl Store for SqliteStore {
    fn apply(&self, report: &Report, received_ms: u64) -> Result<Applied, StoreError> {
        let (first, last) = (report.sequence.first, report.sequence.last);
        let (service, instance) = (report.service.as_str(), report.instance.as_str());
        let received = int(received_ms);
        let mut connection = self.writer();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;

        let conflict = |applied_first: u64, applied_last: u64| StoreError::Conflict {
            instance: instance.to_string(),
            first,
            last,
            applied_first,
            applied_last,
        };
        let pruned_through: Option<i64> = tx
            .query_row(
                "SELECT pruned_through FROM instances WHERE service = ?1 AND instance = ?2",
                params![service, instance],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        if let Some(pruned) = pruned_through.map(unsigned) {
            if last <= pruned {
                return Ok(Applied::Duplicate);
            }
            if first <= pruned {
                return Err(conflict(0, pruned));
            }
        }
        // Applied ranges never overlap, so the one starting last at or before our end is the
        // only one that can overlap us.
        let previous: Option<(i64, i64)> = tx
            .prepare_cached(
                "SELECT first, last FROM applied WHERE service = ?1 AND instance = ?2 AND first <= ?3
                 ORDER BY first DESC LIMIT 1",
            )?
            .query_row(params![service, instance, int(last)], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        if let Some((applied_first, applied_last)) = previous {
            let (applied_first, applied_last) = (unsigned(applied_first), unsigned(applied_last));
            if (applied_first, applied_last) == (first, last) {
                return Ok(Applied::Duplicate);
            }
            if applied_last >= first {
                return Err(conflict(applied_first, applied_last));
            }
        }
        tx.prepare_cached(
            "INSERT INTO applied (service, instance, first, last, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![service, instance, int(first), int(last), received])?;

        tx.prepare_cached(
            "INSERT INTO services (name, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?2)
             ON CONFLICT (name) DO UPDATE SET last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
        )?
        .execute(params![service, received])?;
        tx.prepare_cached(
            "INSERT INTO instances (service, instance, first_seen_ms, last_seen_ms, reports,
                 dropped_findings, dropped_endpoints, dropped_reports, version)
             VALUES (?1, ?2, ?3, ?3, 1, ?4, ?5, ?6, ?7)
             ON CONFLICT (service, instance) DO UPDATE SET
                 last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                 reports = reports + 1,
                 version = excluded.version,
                 dropped_findings = dropped_findings + excluded.dropped_findings,
                 dropped_endpoints = dropped_endpoints + excluded.dropped_endpoints,
                 dropped_reports = dropped_reports + excluded.dropped_reports",
        )?
        .execute(params![
            service,
            instance,
            received,
            int(report.dropped.findings),
            int(report.dropped.endpoints),
            int(report.dropped.reports),
            report.version
        ])?;
        if let Some(version) = &report.version {
            tx.prepare_cached(
                "INSERT INTO releases (service, version, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (service, version) DO UPDATE SET
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            )?
            .execute(params![service, version, received])?;
        }
        let versions: Vec<String> = tx
            .prepare_cached("SELECT version FROM releases WHERE service = ?1")?
            .query_map([service], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        // While the service reports no versions there is no fix to verify, and no row to keep.
        let fleet_newest = fixes::newest(versions.iter().map(String::as_str));

        for endpoint in report.endpoints.iter().filter(|e| e.requests > 0) {
            let key = params![service, endpoint.method, endpoint.route];
            let sketch = if endpoint.public_clients.is_empty() {
                None
            } else {
                let stored: Option<Option<Vec<u8>>> = tx
                    .prepare_cached(
                        "SELECT public_clients FROM endpoints WHERE service = ?1 AND method = ?2 AND route = ?3",
                    )?
                    .query_row(key, |row| row.get(0))
                    .optional()?;
                let mut merged = stored
                    .flatten()
                    .and_then(|bytes| Sketch::from_bytes(&bytes))
                    .unwrap_or_default();
                merged.merge(&endpoint.public_clients);
                merged.to_bytes().map(<[u8]>::to_vec)
            };
            let c = &endpoint.credentials;
            let s = &endpoint.status;
            tx.prepare_cached(
                "INSERT INTO endpoints (service, method, route, requests, public, authenticated,
                     bearer, basic, cookie, api_key, s1xx, s2xx, s3xx, s4xx, s5xx,
                     unauthenticated_success, public_unauthenticated_success,
                     first_seen_ms, last_seen_ms, public_clients, shadow, internal_only)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18, ?19, ?20, ?21, ?22)
                 ON CONFLICT (service, method, route) DO UPDATE SET
                     requests = requests + excluded.requests,
                     public = public + excluded.public,
                     authenticated = authenticated + excluded.authenticated,
                     bearer = bearer + excluded.bearer,
                     basic = basic + excluded.basic,
                     cookie = cookie + excluded.cookie,
                     api_key = api_key + excluded.api_key,
                     s1xx = s1xx + excluded.s1xx,
                     s2xx = s2xx + excluded.s2xx,
                     s3xx = s3xx + excluded.s3xx,
                     s4xx = s4xx + excluded.s4xx,
                     s5xx = s5xx + excluded.s5xx,
                     unauthenticated_success = unauthenticated_success + excluded.unauthenticated_success,
                     public_unauthenticated_success =
                         public_unauthenticated_success + excluded.public_unauthenticated_success,
                     first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
                     public_clients = coalesce(excluded.public_clients, public_clients),
                     shadow = excluded.shadow,
                     internal_only = excluded.internal_only",
            )?
            .execute(params![
                service,
                endpoint.method,
                endpoint.route,
                int(endpoint.requests),
                int(endpoint.public),
                int(endpoint.authenticated),
                int(c.bearer),
                int(c.basic),
                int(c.cookie),
                int(c.api_key),
                int(s.informational),
                int(s.success),
                int(s.redirection),
                int(s.client_error),
                int(s.server_error),
                int(endpoint.unauthenticated_success),
                int(endpoint.public_unauthenticated_success),
                int(endpoint.first_seen_ms),
                int(endpoint.last_seen_ms),
                sketch,
                endpoint.shadow,
                endpoint.internal_only
            ])?;
            tx.prepare_cached(
                "INSERT INTO endpoint_instances (service, method, route, instance, requests, last_seen_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (service, method, route, instance) DO UPDATE SET
                     requests = requests + excluded.requests,
                     last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
            )?
            .execute(params![
                service,
                endpoint.method,
                endpoint.route,
                instance,
                int(endpoint.requests),
                int(endpoint.last_seen_ms)
            ])?;
            if let Some(newest) = fleet_newest {
                tx.prepare_cached(
                    "INSERT INTO version_traffic (service, method, route, instance, version,
                         fleet_newest, requests, public, first_seen_ms, last_seen_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                     ON CONFLICT (service, method, route, instance, version, fleet_newest)
                     DO UPDATE SET
                         requests = requests + excluded.requests,
                         public = public + excluded.public,
                         first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
                         last_seen_ms = max(last_seen_ms, excluded.last_seen_ms)",
                )?
                .execute(params![
                    service,
                    endpoint.method,
                    endpoint.route,
                    instance,
                    report.version.as_deref().unwrap_or(""),
                    newest,
                    int(endpoint.requests),
                    int(endpoint.public),
                    int(endpoint.first_seen_ms),
                    int(endpoint.last_seen_ms)
                ])?;
            }
            for (guard, count) in &endpoint.denials {
                tx.prepare_cached(
                    "INSERT INTO denials (service, method, route, guard, count) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (service, method, route, guard) DO UPDATE SET count = count + excluded.count",
                )?
                .execute(params![service, endpoint.method, endpoint.route, guard, int(*count)])?;
            }
            for (guard, count) in &endpoint.monitor_denials {
                tx.prepare_cached(
                    "INSERT INTO monitor_denials (service, method, route, guard, count) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (service, method, route, guard) DO UPDATE SET count = count + excluded.count",
                )?
                .execute(params![service, endpoint.method, endpoint.route, guard, int(*count)])?;
            }
        }

        for finding in &report.findings {
            let (method, route) = finding
                .endpoint
                .as_ref()
                .map_or(("", ""), |e| (e.method.as_str(), e.route.as_str()));
            tx.prepare_cached(
                "INSERT INTO findings (service, kind, source, method, route, client, detail, instance,
                     count, first_at_ms, at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
                 ON CONFLICT (service, kind, source, method, route, client) DO UPDATE SET
                     count = count + excluded.count,
                     detail = CASE WHEN excluded.at_ms >= at_ms THEN excluded.detail ELSE detail END,
                     instance = CASE WHEN excluded.at_ms >= at_ms THEN excluded.instance ELSE instance END,
                     first_at_ms = min(first_at_ms, excluded.first_at_ms),
                     at_ms = max(at_ms, excluded.at_ms)",
            )?
            .execute(params![
                service,
                finding.kind,
                finding.source,
                method,
                route,
                finding.client.as_deref().unwrap_or(""),
                finding.detail,
                instance,
                int(finding.count),
                int(finding.at_ms)
            ])?;
        }

        if !report.documented.is_empty() {
            let hash = documented_hash(report);
            let stored: Option<i64> = tx
                .prepare_cached("SELECT documented_hash FROM services WHERE name = ?1")?
                .query_row(params![service], |row| row.get(0))?;
            if stored != Some(hash) {
                tx.execute(
                    "DELETE FROM documented WHERE service = ?1",
                    params![service],
                )?;
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO documented (service, method, route) VALUES (?1, ?2, ?3)",
                )?;
                for endpoint in &report.documented {
                    insert.execute(params![service, endpoint.method, endpoint.route])?;
                }
                drop(insert);
                tx.execute(
                    "UPDATE services SET documented_hash = ?2 WHERE name = ?1",
                    params![service, hash],
                )?;
            }
        }
        tx.commit()?;
        Ok(Applied::New)
    }

    fn services(&self) -> Result<Vec<Service>, StoreError> {
        let connection = self.reader();
        let mut services: BTreeMap<String, Service> = BTreeMap::new();
        let mut statement =
            connection.prepare_cached("SELECT name, first_seen_ms, last_seen_ms FROM services")?;
        let rows = statement.query_map([], |row| {
            Ok(Service {
                name: row.get(0)?,
                first_seen_ms: unsigned(row.get(1)?),
                last_seen_ms: unsigned(row.get(2)?),
                instances: 0,
                reports: 0,
                endpoints: 0,
                public_endpoints: 0,
                zombie_endpoints: 0,
                requests: 0,
                findings: 0,
                dropped: Dropped::default(),
            })
        })?;
        for service in rows {
            let service = service?;
            services.insert(service.name.clone(), service);
        }
        let mut statement = connection.prepare_cached(
            "SELECT service, count(*), sum(reports), sum(dropped_findings), sum(dropped_endpoints),
                 sum(dropped_reports)
             FROM instances GROUP BY service",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            if let Some(s) = services.get_mut(&row.get::<_, String>(0)?) {
                s.instances = unsigned(row.get(1)?);
                s.reports = unsigned(row.get(2)?);
                s.dropped = Dropped {
                    findings: unsigned(row.get(3)?),
                    endpoints: unsigned(row.get(4)?),
                    reports: unsigned(row.get(5)?),
                };
            }
        }
        let mut statement = connection.prepare_cached(
            "SELECT service, count(*), sum(public > 0), sum(requests) FROM endpoints GROUP BY service",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            if let Some(s) = services.get_mut(&row.get::<_, String>(0)?) {
                s.endpoints = unsigned(row.get(1)?);
                s.public_endpoints = unsigned(row.get(2)?);
                s.requests = unsigned(row.get(3)?);
            }
        }
        let mut statement = connection.prepare_cached(
            "SELECT d.service, count(*) FROM documented d WHERE NOT EXISTS (
                 SELECT 1 FROM endpoints e
                 WHERE e.service = d.service AND e.method = d.method AND e.route = d.route)
             GROUP BY d.service",
        )?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            if let Some(s) = services.get_mut(&row.get::<_, String>(0)?) {
                s.zombie_endpoints = unsigned(row.get(1)?);
            }
        }
        let mut statement =
            connection.prepare_cached("SELECT service, count(*) FROM findings GROUP BY service")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            if let Some(s) = services.get_mut(&row.get::<_, String>(0)?) {
                s.findings = unsigned(row.get(1)?);
            }
        }
        Ok(services.into_values().collect())
    }

    fn endpoints(&self, query: &EndpointQuery) -> Result<Vec<Endpoint>, StoreError> {
        let connection = self.reader();
        let service = query.service.as_deref();
        let per_guard = |table: &str| -> Result<GuardCounts, StoreError> {
            let mut counts = GuardCounts::new();
            let mut statement = connection.prepare_cached(&format!(
                "SELECT service, method, route, guard, count FROM {table} WHERE ?1 IS NULL OR service = ?1"
            ))?;
            let mut rows = statement.query(params![service])?;
            while let Some(row) = rows.next()? {
                rows::add_guard_count(&mut counts, row)?;
            }
            Ok(counts)
        };
        let mut denials = per_guard("denials")?;
        let mut monitor_denials = per_guard("monitor_denials")?;

        let mut endpoints = Vec::new();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {} FROM endpoints e WHERE ?1 IS NULL OR e.service = ?1",
            rows::ENDPOINT_COLUMNS
        ))?;
        let mut rows = statement.query(params![service])?;
        while let Some(row) = rows.next()? {
            endpoints.push(rows::reached_endpoint(
                row,
                &mut denials,
                &mut monitor_denials,
            )?);
        }
        let mut statement = connection.prepare_cached(
            "SELECT d.service, d.method, d.route FROM documented d
             WHERE (?1 IS NULL OR d.service = ?1) AND NOT EXISTS (
                 SELECT 1 FROM endpoints e
                 WHERE e.service = d.service AND e.method = d.method AND e.route = d.route)",
        )?;
        let mut rows = statement.query(params![service])?;
        while let Some(row) = rows.next()? {
            endpoints.push(rows::zombie_endpoint(row)?);
        }
        Ok(rows::select_endpoints(endpoints, query))
    }

    fn findings(&self, query: &FindingQuery) -> Result<Vec<FindingRecord>, StoreError> {
        let connection = self.reader();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {} FROM findings
             WHERE (?1 IS NULL OR service = ?1) AND (?2 IS NULL OR kind = ?2)
                 AND (NOT ?3 OR kind NOT IN (?5, ?6))
             ORDER BY at_ms DESC, service, kind LIMIT ?4",
            rows::FINDING_COLUMNS
        ))?;
        let mut rows = statement.query(params![
            query.service,
            query.kind,
            query.without_client_denials,
            int(query.limit as u64),
            FindingKind::ClientDenied.as_str(),
            FindingKind::ClientWouldDeny.as_str(),
        ])?;
        let mut findings = Vec::new();
        while let Some(row) = rows.next()? {
            findings.push(rows::finding(row)?);
        }
        Ok(findings)
    }

    fn denied_clients(
        &self,
        service: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeniedClient>, StoreError> {
        let connection = self.reader();
        let mut statement = connection.prepare_cached(
            "SELECT service, client,
                 sum(CASE WHEN kind = ?1 THEN count ELSE 0 END),
                 json_group_array(DISTINCT CASE WHEN kind = ?1 THEN source END),
                 sum(CASE WHEN kind = ?2 THEN count ELSE 0 END),
                 json_group_array(DISTINCT CASE WHEN kind = ?2 THEN source END),
                 count(DISTINCT CASE WHEN method != '' THEN method || ' ' || route END), max(at_ms),
                 max(kind = ?5)
             FROM findings
             WHERE kind IN (?1, ?2, ?5) AND client != '' AND (?3 IS NULL OR service = ?3)
             GROUP BY service, client
             ORDER BY sum(count) DESC, 8 DESC LIMIT ?4",
        )?;
        // A JSON array, so a source holding a comma stays whole; the other kind's rows add a
        // null to it.
        let sources = |array: String| -> Vec<String> {
            let mut sources: Vec<String> = serde_json::from_str::<Vec<Option<String>>>(&array)
                .unwrap_or_default()
                .into_iter()
                .flatten()
                .collect();
            sources.sort();
            sources
        };
        let rows = statement.query_map(
            params![
                FindingKind::ClientDenied.as_str(),
                FindingKind::ClientWouldDeny.as_str(),
                service,
                int(limit as u64),
                FindingKind::ClientBanned.as_str(),
            ],
            |row| {
                Ok(DeniedClient {
                    service: row.get(0)?,
                    client: row.get(1)?,
                    denials: unsigned(row.get(2)?),
                    sources: sources(row.get(3)?),
                    monitor_denials: unsigned(row.get(4)?),
                    monitor_sources: sources(row.get(5)?),
                    endpoints: unsigned(row.get(6)?),
                    at_ms: unsigned(row.get(7)?),
                    banned: row.get::<_, i64>(8)? != 0,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn prune(&self, cutoffs: Cutoffs) -> Result<Pruned, StoreError> {
        let mut connection = self.writer();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (findings, instances, endpoints) = (
            int(cutoffs.findings_ms),
            int(cutoffs.instances_ms),
            int(cutoffs.endpoints_ms),
        );
        let mut pruned = Pruned {
            findings: tx.execute("DELETE FROM findings WHERE at_ms < ?1", [findings])? as u64,
            ..Pruned::default()
        };
        let gone =
            "SELECT 1 FROM instances i WHERE i.service = t.service AND i.instance = t.instance
                    AND i.last_seen_ms < ?1";
        pruned.keys += tx.execute(
            &format!("DELETE FROM applied AS t WHERE EXISTS ({gone})"),
            [instances],
        )? as u64;
        for table in ["endpoint_instances", "version_traffic"] {
            tx.execute(
                &format!("DELETE FROM {table} AS t WHERE EXISTS ({gone})"),
                [instances],
            )?;
        }
        tx.execute("DELETE FROM releases WHERE last_seen_ms < ?1", [instances])?;
        pruned.instances =
            tx.execute("DELETE FROM instances WHERE last_seen_ms < ?1", [instances])? as u64;
        // Live instances keep their recent keys; older ones collapse into a high-water mark, so
        // a very late resend is still recognised as applied.
        tx.execute(
            "UPDATE instances SET pruned_through = max(coalesce(pruned_through, -1),
                 (SELECT max(last) FROM applied a WHERE a.service = instances.service
                  AND a.instance = instances.instance AND a.received_ms < ?1))
             WHERE EXISTS (SELECT 1 FROM applied a WHERE a.service = instances.service
                  AND a.instance = instances.instance AND a.received_ms < ?1)",
            [instances],
        )?;
        pruned.keys +=
            tx.execute("DELETE FROM applied WHERE received_ms < ?1", [instances])? as u64;
        let stale = "SELECT 1 FROM endpoints e WHERE e.service = t.service AND e.method = t.method
                     AND e.route = t.route AND e.last_seen_ms < ?1";
        for table in ["denials", "monitor_denials"] {
            tx.execute(
                &format!("DELETE FROM {table} AS t WHERE EXISTS ({stale})"),
                [endpoints],
            )?;
        }
        tx.execute(
            &format!("DELETE FROM endpoint_instances AS t WHERE EXISTS ({stale})"),
            [endpoints],
        )?;
        tx.execute(
            "DELETE FROM version_traffic WHERE last_seen_ms < ?1",
            [endpoints],
        )?;
        pruned.endpoints =
            tx.execute("DELETE FROM endpoints WHERE last_seen_ms < ?1", [endpoints])? as u64;
        tx.commit()?;
        Ok(pruned)
    }

    fn fleet_versions(&self, service: Option<&str>) -> Result<FleetVersions, StoreError> {
        let connection = self.reader();
        let mut versions = FleetVersions::default();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {} FROM instances WHERE ?1 IS NULL OR service = ?1 ORDER BY service, instance",
            rows::INSTANCE_VERSION_COLUMNS
        ))?;
        let mut rows = statement.query([service])?;
        while let Some(row) = rows.next()? {
            versions.instances.push(rows::instance_version(row)?);
        }
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {} FROM releases WHERE ?1 IS NULL OR service = ?1
             ORDER BY service, first_seen_ms, version",
            rows::RELEASE_COLUMNS
        ))?;
        let mut rows = statement.query([service])?;
        while let Some(row) = rows.next()? {
            versions.releases.push(rows::release(row)?);
        }
        Ok(versions)
    }

    fn version_traffic(
        &self,
        service: &str,
        method: &str,
        route: &str,
    ) -> Result<Vec<VersionTraffic>, StoreError> {
        let connection = self.reader();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {} FROM version_traffic WHERE service = ?1 AND method = ?2 AND route = ?3
             ORDER BY instance, version, fleet_newest",
            rows::VERSION_TRAFFIC_COLUMNS
        ))?;
        let mut rows = statement.query(params![service, method, route])?;
        let mut traffic = Vec::new();
        while let Some(row) = rows.next()? {
            traffic.push(rows::version_traffic(row)?);
        }
        Ok(traffic)
    }

    fn totals(&self) -> Result<Totals, StoreError> {
        let connection = self.reader();
        let mut statement = connection.prepare_cached(
            "SELECT (SELECT count(*) FROM services),
                 (SELECT count(*) FROM endpoints) + (SELECT count(*) FROM documented d
                  WHERE NOT EXISTS (SELECT 1 FROM endpoints e
                  WHERE e.service = d.service AND e.method = d.method AND e.route = d.route))",
        )?;
        Ok(statement.query_row([], |row| {
            Ok(Totals {
                services: unsigned(row.get(0)?),
                endpoints: unsigned(row.get(1)?),
            })
        })?)
    }
}
