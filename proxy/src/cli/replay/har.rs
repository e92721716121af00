//! HAR 1.2 files (what browsers' developer tools and most HTTP debugging proxies export) as
//! requests: `log.entries[]`, read one entry at a time, so that a file of many entries needs
//! the memory of one.

use super::parse::{LoggedRequest, Unreadable};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

/// Reads the entries of the HAR document `reader` holds, handing each to `each`, in order, as
/// it is read. The client of an entry is the first address of its `X-Forwarded-For`, else
/// `default_client` (a HAR's `serverIPAddress` is the server's). The error says why the
/// document as a whole cannot be read.
pub fn entries(
    reader: impl Read,
    default_client: IpAddr,
    mut each: impl FnMut(Result<LoggedRequest, Unreadable>),
) -> Result<(), String> {
    let mut handler = |entry: serde_json::Value| each(entry_of(&entry, default_client));
    let mut deserializer = serde_json::Deserializer::from_reader(reader);
    let found = Document(&mut handler)
        .deserialize(&mut deserializer)
        .map_err(|e| format!("not a HAR file: {e}"))?;
    deserializer
        .end()
        .map_err(|e| format!("not a HAR file: {e}"))?;
    if !found {
        return Err("not a HAR file: it has no log.entries".into());
    }
    Ok(())
}

type Handler<'h> = &'h mut dyn FnMut(serde_json::Value);

/// The document: `{"log": {...}}`; whether it had `log.entries`.
struct Document<'h>(Handler<'h>);

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(Field {
            name: "log",
            expecting: "a HAR document, an object with \"log\"",
            inner: Inner::Log(self.0),
        })
    }
}

/// An object of which one field, `name`, is read by `inner` and the others skipped.
struct Field<'h> {
    name: &'static str,
    expecting: &'static str,
    inner: Inner<'h>,
}

enum Inner<'h> {
    Log(Handler<'h>),
    Entries(Handler<'h>),
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut inner = Some(self.inner);
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            match inner.take_if(|_| key == self.name) {
                Some(Inner::Log(handler)) => {
                    found = map.next_value_seed(Nested(Field {
                        name: "entries",
                        expecting: "a HAR log, an object with \"entries\"",
                        inner: Inner::Entries(handler),
                    }))?
                }
                Some(Inner::Entries(handler)) => {
                    map.next_value_seed(Entries(handler))?;
                    found = true;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(found)
    }
}

/// A [`Field`] as the value of an enclosing object's field.
struct Nested<'h>(Field<'h>);

impl<'de> DeserializeSeed<'de> for Nested<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(self.0)
    }
}

/// `log.entries`: each element is handed on as it is read.
struct Entries<'h>(Handler<'h>);

impl<'de> DeserializeSeed<'de> for Entries<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Entries<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("log.entries, a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(entry) = seq.next_element::<serde_json::Value>()? {
            (self.0)(entry);
        }
        Ok(())
    }
}

fn malformed(why: impl Into<String>) -> Unreadable {
    Unreadable::Malformed(why.into())
}

/// One entry: `request` (method, url, headers, postData.text), `response.status`,
/// `startedDateTime`.
fn entry_of(
    entry: &serde_json::Value,
    default_client: IpAddr,
) -> Result<LoggedRequest, Unreadable> {
    let text = |value: &serde_json::Value, path: &str| {
        value
            .pointer(path)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let started = text(entry, "/startedDateTime").ok_or_else(|| malformed("no startedDateTime"))?;
    let at = time::OffsetDateTime::parse(&started, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|moment| u64::try_from(moment.unix_timestamp_nanos()).ok())
        .map(Duration::from_nanos)
        .ok_or_else(|| {
            malformed(format!(
                "startedDateTime {started:?} is not an RFC 3339 time"
            ))
        })?;
    let method = text(entry, "/request/method").ok_or_else(|| malformed("no request.method"))?;
    let target = text(entry, "/request/url").ok_or_else(|| malformed("no request.url"))?;
    let status = entry
        .pointer("/response/status")
        .and_then(|s| s.as_u64())
        .ok_or_else(|| malformed("no response.status"))?;
    if status == 0 {
        // What browsers record for a request that got no answer (blocked, aborted).
        return Err(malformed("response.status is 0: no response was recorded"));
    }
    let status = u16::try_from(status)
        .ok()
        .filter(|s| (100..=599).contains(s))
        .ok_or_else(|| malformed(format!("response.status {status} is not a status")))?;
    let mut headers = Vec::new();
    for header in entry
        .pointer("/request/headers")
        .and_then(|h| h.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(value)) = (text(header, "/name"), text(header, "/value")) {
            headers.push((name.to_ascii_lowercase(), value));
        }
    }
    let ip = headers
        .iter()
        .find(|(name, _)| name == "x-forwarded-for")
        .and_then(|(_, value)| value.split(',').next()?.trim().parse().ok())
        .unwrap_or(default_client);
    Ok(LoggedRequest {
        at,
        ip,
        method,
        target,
        status,
        user_agent: None,
        referer: None,
        forwarded_for: None,
        client: None,
        headers,
        body: text(entry, "/request/postData/text").map(String::into_bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    fn read(text: &str) -> Result<Vec<Result<LoggedRequest, Unreadable>>, String> {
        let mut got = Vec::new();
        entries(text.as_bytes(), DEFAULT, |entry| got.push(entry))?;
        Ok(got)
    }

    #[test]
    fn entries_become_requests_with_their_headers_body_and_client() {
        let har = r#"{"log": {"version": "1.2", "creator": {"name": "x", "version": "1"},
          "pages": [{"id": "p", "title": "t"}],
          "entries": [
            {"startedDateTime": "2026-12-02T10:00:00.250Z", "serverIPAddress": "10.0.0.5",
             "request": {"method": "POST", "url": "https://shop.example/login?next=/",
               "headers": [{"name": "X-Forwarded-For", "value": "198.51.100.4, 10.0.0.1"},
                           {"name": ":authority", "value": "shop.example"}],
               "postData": {"mimeType": "application/json", "text": "{\"user\":\"a\"}"}},
             "response": {"status": 401, "content": {"size": 2, "text": "no"}}},
            {"startedDateTime": "2026-12-02T10:00:01Z",
             "request": {"method": "GET", "url": "https://shop.example/cart", "headers": []},
             "response": {"status": 200}},
            {"startedDateTime": "2026-12-02T10:00:02Z",
             "request": {"method": "GET", "url": "https://shop.example/x"},
             "response": {"status": 0}},
            {"request": {"method": "GET", "url": "/y"}, "response": {"status": 200}}
          ]}}"#;
        let got = read(har).unwrap();
        assert_eq!(got.len(), 4);
        let login = got[0].as_ref().unwrap();
        assert_eq!(
            (login.method.as_str(), login.target.as_str(), login.status),
            ("POST", "https://shop.example/login?next=/", 401)
        );
        assert_eq!(login.at, Duration::from_millis(1_796_205_600_250));
        assert_eq!(login.ip, "198.51.100.4".parse::<IpAddr>().unwrap());
        assert_eq!(login.body.as_deref(), Some(&b"{\"user\":\"a\"}"[..]));
        assert_eq!(login.headers[0].0, "x-forwarded-for");
        let cart = got[1].as_ref().unwrap();
        assert_eq!(cart.ip, DEFAULT, "no X-Forwarded-For: the default client");
        assert_eq!(cart.body, None);
        assert!(matches!(&got[2], Err(Unreadable::Malformed(why)) if why.contains("status is 0")));
        assert!(
            matches!(&got[3], Err(Unreadable::Malformed(why)) if why.contains("startedDateTime"))
        );
    }

    #[test]
    fn a_document_that_is_not_a_har_says_why() {
        for (text, says) in [
            ("{\"log\": {\"pages\": []}}", "no log.entries"),
            ("{\"entries\": []}", "no log.entries"),
            ("[1, 2]", "a HAR document"),
            ("{\"log\": {\"entries\": {}}}", "log.entries, a list"),
            ("{\"log\": {\"entries\": [}", "line 1"),
            (
                "{\"log\": {\"entries\": []}} trailing",
                "trailing characters",
            ),
        ] {
            let error = read(text).unwrap_err();
            assert!(
                error.starts_with("not a HAR file: ") && error.contains(says),
                "{text}: {error}"
            );
        }
    }
}
