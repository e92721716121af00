//! The guest side of the `packed-guard` world: generated bindings, the [`Guard`] trait and its
//! macro.

use std::time::Duration;

/// Types and functions generated from `wit/guard.wit` by wit-bindgen, for the `packed-guard`
/// world: requests and responses arrive packed, one allocation each, and [`guard!`] reads
/// them in place as [`Request`] and [`Response`].
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "packed-guard",
        pub_export_macro: true,
        export_macro_name: "__export_guard_world",
        default_bindings_module: "vigil_guest::bindings",
    });
}

pub use crate::request::{Client, Header, Request, Response};
pub use bindings::vigil::guard::types::{Deny, Event, Level, Verdict};

/// A guard's policy. Implement it on a unit struct and register it with [`guard!`].
pub trait Guard {
    /// The guard's configuration, parsed from the JSON of its `config` table in `vigil.toml`.
    /// Use [`NoConfig`] for a guard without settings, and `#[serde(deny_unknown_fields)]` so
    /// a misspelt key is an error that names it.
    type Config: serde::de::DeserializeOwned + Send + Sync + 'static;

    /// Checks values the type system cannot (ranges, consistency). An `Err` rejects the guard
    /// at load with this message; name the field in it.
    fn check_config(config: &Self::Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Decides on a request: [`Verdict::Allow`] lets it through, a `Deny` makes the proxy
    /// answer with the given status instead (unless the guard runs in monitor mode).
    fn on_request(config: &Self::Config, req: &Request) -> Verdict;

    /// Observes the response to a request this guard saw. The default does nothing.
    fn on_response(config: &Self::Config, req: &Request, resp: &Response) {
        let _ = (config, req, resp);
    }

    /// Whether the guard reads header fields (of requests and responses). Set it to `false`
    /// when it does not: Vigil then passes empty header lists and saves copying them into the
    /// guard on every call.
    const READS_HEADERS: bool = true;

    /// The header fields the guard reads under `config` (names, case-insensitive), when that
    /// depends on the configuration: Vigil then copies only those into it, in requests and
    /// responses alike; an empty list means none. `None` (the default) leaves it to
    /// [`Guard::READS_HEADERS`]. Called once per instance, from `init`.
    fn headers_read(config: &Self::Config) -> Option<Vec<String>> {
        let _ = config;
        None
    }

    /// Whether [`Guard::on_response`] does anything. Set it to `false` when it does not: Vigil
    /// then never calls it, which saves a call per request.
    const OBSERVES_RESPONSES: bool = true;

    /// The response statuses [`Guard::on_response`] does something for, as a comma-separated
    /// list of statuses and classes (`"404"`, `"401,403"`, `"4xx,5xx"`); empty means every
    /// status. Vigil calls `on_response` only for these, which saves a call on every other
    /// response. At most 46 bytes; Vigil refuses to load a guard whose list it cannot read.
    const OBSERVED_STATUSES: &'static str = "";
}

/// Bytes `OBSERVED_STATUSES` may take in the `vigil-guard-needs` section.
const MAX_STATUSES_LEN: usize = 46;

/// Length of the `vigil-guard-needs` section [`guard!`] writes.
#[doc(hidden)]
pub const NEEDS_LEN: usize = "headers responses=".len() + MAX_STATUSES_LEN;

/// The text of the `vigil-guard-needs` custom section: the words `headers` and `responses`
/// (or `responses=STATUSES`) for what the guard uses, space-padded to a fixed length. Used by
/// [`guard!`].
#[doc(hidden)]
pub const fn needs_section(headers: bool, responses: bool, statuses: &str) -> [u8; NEEDS_LEN] {
    assert!(
        statuses.len() <= MAX_STATUSES_LEN,
        "OBSERVED_STATUSES is longer than 46 bytes"
    );
    let mut out = [b' '; NEEDS_LEN];
    let mut at = 0;
    if headers {
        at = copy_word(&mut out, at, b"headers") + 1;
    }
    if responses {
        at = copy_word(&mut out, at, b"responses");
        if !statuses.is_empty() {
            at = copy_word(&mut out, at, b"=");
            copy_word(&mut out, at, statuses.as_bytes());
        }
    }
    out
}

/// Copies `word` into `out` at `at`; returns where it ends.
const fn copy_word(out: &mut [u8; NEEDS_LEN], at: usize, word: &[u8]) -> usize {
    let mut i = 0;
    while i < word.len() {
        out[at + i] = word[i];
        i += 1;
    }
    at + word.len()
}

/// Configuration of a guard that takes none; any JSON object is accepted.
#[derive(serde::Deserialize, Debug, Default, Clone, Copy)]
pub struct NoConfig {}

/// Registers a [`Guard`] implementation as the component's exports.
#[macro_export]
macro_rules! guard {
    ($guard:ty) => {
        const _: () = {
            static CONFIG: ::std::sync::OnceLock<<$guard as $crate::Guard>::Config> =
                ::std::sync::OnceLock::new();

            // Tells the host what this guard uses (see guard.wit): what it does not use is
            // neither copied into it nor called.
            #[used]
            #[link_section = "vigil-guard-needs"]
            static NEEDS: [u8; $crate::NEEDS_LEN] = $crate::needs_section(
                <$guard as $crate::Guard>::READS_HEADERS,
                <$guard as $crate::Guard>::OBSERVES_RESPONSES,
                <$guard as $crate::Guard>::OBSERVED_STATUSES,
            );

            struct Export;

            impl $crate::bindings::Guest for Export {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::install_panic_hook();
                    let parsed =
                        $crate::parse_config::<<$guard as $crate::Guard>::Config>(&config)?;
                    <$guard as $crate::Guard>::check_config(&parsed)?;
                    if let Some(names) = <$guard as $crate::Guard>::headers_read(&parsed) {
                        $crate::bindings::vigil::guard::state::reads_headers(&names);
                    }
                    let _ = CONFIG.set(parsed);
                    Ok(())
                }

                fn on_request(req: ::std::vec::Vec<u8>) -> $crate::Verdict {
                    let req = $crate::unpacked(&req, $crate::request::unpack_request);
                    <$guard as $crate::Guard>::on_request($crate::configured(&CONFIG), &req)
                }

                fn on_response(req: ::std::vec::Vec<u8>, resp: ::std::vec::Vec<u8>) {
                    let req = $crate::unpacked(&req, $crate::request::unpack_request);
                    let resp = $crate::unpacked(&resp, $crate::request::unpack_response);
                    <$guard as $crate::Guard>::on_response($crate::configured(&CONFIG), &req, &resp)
                }
            }

    $crate::bindings::__export_guard_world!(Export with_types_in $crate::bindings);
        };
    };
}

/// Parses a guard's JSON configuration; an empty string counts as `{}`. Used by [`guard!`].
pub fn parse_config<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| format!("invalid config: {e}"))
}

/// What `unpack` reads from the host's bytes. Used by [`guard!`]; the host packs what it
/// sends, so a malformed value is a host bug, reported as a panic that names the item.
#[doc(hidden)]
pub fn unpacked<'a, T>(
    bytes: &'a [u8],
    unpack: fn(&'a [u8]) -> Result<T, crate::request::UnpackError>,
) -> T {
    unpack(bytes).unwrap_or_else(|e| panic!("{e}"))
}

/// The configuration stored by `init`. Used by [`guard!`].
#[doc(hidden)]
pub fn configured<T>(cell: &std::sync::OnceLock<T>) -> &T {
    // The host always calls `init` on an instance before any other export.
    cell.get()
        .expect("vigil guard called before init: the host must call init first")
}

/// Sends panic messages to the host log, so a panic reads as text rather than a bare trap.
#[doc(hidden)]
pub fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            bindings::vigil::guard::state::log(Level::Error, &format!("panic: {info}"));
        }));
    });
}

/// A deny verdict with this status and reason.
pub fn deny(status: u16, reason: impl Into<String>) -> Verdict {
    Verdict::Deny(Deny {
        status,
        reason: reason.into(),
        retry_after_secs: None,
    })
}

/// A 429 verdict whose `Retry-After` is `wait` rounded up to whole seconds.
pub fn too_many_requests(reason: impl Into<String>, wait: Duration) -> Verdict {
    let secs = wait.as_millis().div_ceil(1000).clamp(1, u32::MAX as u128) as u32;
    Verdict::Deny(Deny {
        status: 429,
        reason: reason.into(),
        retry_after_secs: Some(secs),
    })
}

/// With the `testing` feature, answers from the thread's [`TestHost`](crate::testing::TestHost)
/// when there is one; the host's import otherwise.
macro_rules! test_host {
    (|$h:ident| $call:expr) => {
        #[cfg(feature = "testing")]
        if let Some(answer) = crate::testing::with(|$h| $call) {
            return answer;
        }
    };
}

/// The host's state, private to this guard. See the `state` interface in `wit/guard.wit`.
pub mod state {
    use super::bindings::vigil::guard::state as host;
    use super::Event;
    use std::time::Duration;

    /// The current client's most recent requests, newest first.
    pub fn history(limit: u32) -> Vec<Event> {
        test_host!(|h| h.history(limit));
        host::history(limit)
    }

    /// Whether the current client made a request matching one of `patterns` within `within`
    /// (only 2xx and 3xx answers with `successful_only`): a history question answered by the
    /// host, without copying the history into the guard.
    pub fn happened(patterns: &[String], within: Duration, successful_only: bool) -> bool {
        test_host!(|h| h.happened(patterns, within, successful_only));
        host::happened(patterns, within.as_millis() as u64, successful_only)
    }

    /// Takes a token from the rate limiter `key`; `Err` says how long to wait.
    pub fn rate(key: &str, per_second: f64, burst: u32) -> Result<(), Duration> {
        test_host!(|h| h.rate(key, per_second, burst));
        host::rate(key, per_second, burst).map_err(|ms| Duration::from_millis(ms.into()))
    }

    /// Adds `delta` to the sliding-window counter `key` and returns its total over `window`.
    pub fn count(key: &str, delta: i64, window: Duration) -> i64 {
        test_host!(|h| h.count(key, delta, window));
        host::count(key, delta, window.as_millis() as u64)
    }

    /// Records `member` in the distinct set `key`; returns the distinct members over `window`.
    pub fn distinct(key: &str, member: &str, window: Duration) -> u32 {
        test_host!(|h| h.distinct(key, member, window));
        host::distinct(key, member, window.as_millis() as u64)
    }

    /// The value under `key`, unless absent or expired.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        test_host!(|h| h.get(key));
        host::get(key)
    }

    /// Stores `value` under `key` for `ttl`.
    pub fn set(key: &str, value: &[u8], ttl: Duration) {
        test_host!(|h| h.set(key, value, ttl));
        host::set(key, value, ttl.as_millis() as u64)
    }

    /// Reports a security finding of `kind` to the collector.
    pub fn finding(kind: &str, detail: &str) {
        test_host!(|h| h.finding(kind, detail));
        host::finding(kind, detail)
    }
}

/// Log lines attributed to the guard, written by the host through its own logger.
pub mod log {
    use super::bindings::vigil::guard::state::log as host_log;
    use super::Level;

    /// Logs at error level.
    pub fn error(message: impl AsRef<str>) {
        write(Level::Error, message.as_ref())
    }
    /// Logs at warn level.
    pub fn warn(message: impl AsRef<str>) {
        write(Level::Warn, message.as_ref())
    }
    /// Logs at info level.
    pub fn info(message: impl AsRef<str>) {
        write(Level::Info, message.as_ref())
    }
    /// Logs at debug level.
    pub fn debug(message: impl AsRef<str>) {
        write(Level::Debug, message.as_ref())
    }

    fn write(level: Level, message: &str) {
        test_host!(|h| h.log(level, message));
        host_log(level, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(section: [u8; NEEDS_LEN]) -> String {
        String::from_utf8(section.to_vec())
            .unwrap()
            .trim_end()
            .to_string()
    }

    #[test]
    fn the_needs_section_lists_what_the_guard_uses() {
        assert_eq!(text(needs_section(true, true, "")), "headers responses");
        assert_eq!(text(needs_section(true, false, "")), "headers");
        assert_eq!(text(needs_section(false, true, "")), "responses");
        assert_eq!(text(needs_section(false, false, "")), "");
        assert_eq!(
            text(needs_section(true, true, "401,403")),
            "headers responses=401,403"
        );
        assert_eq!(text(needs_section(false, true, "404")), "responses=404");
        assert_eq!(text(needs_section(false, false, "404")), "");
        let longest = "4xx,".repeat(11) + "5x";
        assert_eq!(
            text(needs_section(true, true, &longest)),
            format!("headers responses={longest}")
        );
    }

    #[test]
    #[should_panic(expected = "longer than 46 bytes")]
    fn a_status_list_that_does_not_fit_is_refused() {
        needs_section(false, true, &"4xx,".repeat(12));
    }
}
