//! Reports as the collector decodes them (`vigil_collector::ingest`): a gzip body inflated
//! under a size cap, then JSON read into a `vigil_report::Report` and validated.
//!
//! Input: a report body, JSON or (starting with the gzip magic) gzip-compressed JSON.
//!
//! Properties: inflating never yields more than the cap; a report the collector accepts is
//! valid, encodes to JSON the collector accepts again as the same report, names its
//! idempotency key `instance:first-last`, and its sketches estimate and merge without fault.

use vigil_collector::ingest::{inflate, parse};

/// Inflation cap: small, so that inputs reach it.
const LIMIT: usize = 64 << 10;

/// Decodes the input as the collector decodes a report body and checks the report.
pub fn fuzz(data: &[u8]) {
    if data.starts_with(&[0x1f, 0x8b]) {
        if let Ok(json) = inflate(data, LIMIT) {
            assert!(json.len() <= LIMIT, "inflated to {} bytes", json.len());
            check(&json);
        }
    }
    check(data);
}

fn check(json: &[u8]) {
    let Ok(report) = parse(json) else {
        return;
    };
    report
        .validate()
        .unwrap_or_else(|e| panic!("accepted, yet invalid: {e}"));
    assert_eq!(
        report.idempotency_key(),
        format!(
            "{}:{}-{}",
            report.instance, report.sequence.first, report.sequence.last
        )
    );
    let encoded = serde_json::to_vec(&report).expect("a report encodes");
    let decoded = parse(&encoded).unwrap_or_else(|e| {
        panic!(
            "{report:?} encodes to {}, which is refused: {e}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(decoded, report);
    for endpoint in &report.endpoints {
        let sketch = &endpoint.public_clients;
        let mut merged = sketch.clone();
        merged.merge(sketch);
        assert!(
            merged == *sketch,
            "a sketch merged with itself is unchanged"
        );
        assert_eq!(
            sketch.is_empty(),
            sketch.estimate() == 0 && sketch.to_bytes().is_none()
        );
    }
}
