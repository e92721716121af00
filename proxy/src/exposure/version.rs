//! The version of the service the sidecar stands in front of, as the reports carry it: fixed
//! at start (`report.version`, `report.version_env`), or announced by the upstream in a
//! response header (`report.version_header`), which then replaces it.
//!
//! The collector uses it to tell which instances still run a build that a fix has not reached,
//! so a version is only taken from a header when it is valid, and a change is noticed on the
//! first response that carries it.

use crate::config::VersionSource;
use http::{HeaderMap, HeaderName};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// The service's version now, and where a new one may come from.
pub struct ServiceVersion {
    header: Option<HeaderName>,
    current: RwLock<Option<Arc<str>>>,
    /// So a build that sends a malformed header is logged once, not per response.
    warned_invalid: AtomicBool,
}

impl ServiceVersion {
    /// Starts at the fixed version, if any.
    pub fn new(source: &VersionSource) -> ServiceVersion {
        ServiceVersion {
            header: source.header.clone(),
            current: RwLock::new(source.fixed.as_deref().map(Arc::from)),
            warned_invalid: AtomicBool::new(false),
        }
    }

    /// The version counts are attributed to now.
    pub fn current(&self) -> Option<String> {
        self.read().as_deref().map(str::to_string)
    }

    /// The version a response announces when it is valid and not the current one; `None`
    /// (without locking for writing) in every other case, which is nearly every response.
    pub fn announced(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let value = headers.get(self.header.as_ref()?)?;
        if self.read().as_deref().map(str::as_bytes) == Some(value.as_bytes()) {
            return None;
        }
        let text = value.to_str().ok().map(str::trim).unwrap_or_default();
        if let Err(problem) = vigil_report::check_version(text) {
            if !self.warned_invalid.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    header = %self.header.as_ref()?,
                    %problem,
                    "the upstream's version header is malformed; it is ignored (logged once) and reports keep the last valid version"
                );
            }
            return None;
        }
        (self.read().as_deref() != Some(text)).then(|| Arc::from(text))
    }

    /// Whether `version` is the current one.
    pub fn is_current(&self, version: &str) -> bool {
        self.read().as_deref() == Some(version)
    }

    /// Makes `version` current; the one it replaces.
    pub fn replace(&self, version: Arc<str>) -> Option<Arc<str>> {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        current.replace(version)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<str>>> {
        self.current.read().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker(fixed: Option<&str>) -> ServiceVersion {
        ServiceVersion::new(&VersionSource {
            fixed: fixed.map(str::to_string),
            header: Some(HeaderName::from_static("x-app-version")),
        })
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-app-version", value.parse().unwrap());
        headers
    }

    #[test]
    fn only_a_valid_new_version_is_announced() {
        let version = tracker(Some("1.0"));
        assert_eq!(version.current().as_deref(), Some("1.0"));
        assert!(version.announced(&headers("1.0")).is_none(), "not new");
        assert!(version.announced(&HeaderMap::new()).is_none(), "absent");
        assert!(
            version.announced(&headers("1.1 beta")).is_none(),
            "malformed"
        );
        assert!(
            version.announced(&headers(&"9".repeat(65))).is_none(),
            "too long"
        );
        assert!(
            version.announced(&headers(" 1.0 ")).is_none(),
            "the same, padded"
        );
        let new = version.announced(&headers("1.1")).unwrap();
        assert_eq!(&*new, "1.1");
        assert_eq!(version.replace(new).as_deref(), Some("1.0"));
        assert!(version.is_current("1.1"));
    }

    #[test]
    fn without_a_header_the_version_never_changes() {
        let fixed = ServiceVersion::new(&VersionSource {
            fixed: Some("2.0".into()),
            header: None,
        });
        assert!(fixed.announced(&headers("3.0")).is_none());
        assert_eq!(fixed.current().as_deref(), Some("2.0"));
        assert!(tracker(None).current().is_none());
    }
}
