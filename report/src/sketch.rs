//! A HyperLogLog sketch: approximate distinct counts in fixed memory, mergeable across instances.
//!
//! Each endpoint keeps one to count its distinct public clients. The sketch travels in reports
//! so the collector can merge instances and still count a client seen by two of them once.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Registers are indexed by this many bits of the hash: 1,024 registers, about 3% error.
const PRECISION: u32 = 10;
/// Number of registers, and the sketch's size in bytes.
pub const REGISTERS: usize = 1 << PRECISION;

/// An approximate set of distinct members.
#[derive(Clone, PartialEq, Eq)]
pub struct Sketch {
    /// Empty until the first member arrives, so the many endpoints with no public client
    /// cost nothing.
    registers: Option<Box<[u8; REGISTERS]>>,
}

impl Sketch {
    /// An empty sketch.
    pub const fn new() -> Self {
        Sketch { registers: None }
    }

    /// Adds a member.
    pub fn insert(&mut self, member: &[u8]) {
        self.insert_hash(stable_hash(member));
    }

    /// Adds a member given by its [`stable_hash`], for callers that hash once for several
    /// sketches.
    pub fn insert_hash(&mut self, hash: u64) {
        let index = (hash >> (64 - PRECISION)) as usize;
        // Rank of the first set bit in the remaining bits, counted from 1.
        let rest = hash << PRECISION;
        let rank = (rest.leading_zeros().min(64 - PRECISION) + 1) as u8;
        let registers = self
            .registers
            .get_or_insert_with(|| Box::new([0; REGISTERS]));
        if registers[index] < rank {
            registers[index] = rank;
        }
    }

    /// Folds another sketch in: the result counts the union of both.
    pub fn merge(&mut self, other: &Sketch) {
        let Some(theirs) = &other.registers else {
            return;
        };
        let ours = self
            .registers
            .get_or_insert_with(|| Box::new([0; REGISTERS]));
        for (mine, their) in ours.iter_mut().zip(theirs.iter()) {
            *mine = (*mine).max(*their);
        }
    }

    /// Whether no member was ever added.
    pub fn is_empty(&self) -> bool {
        self.registers.is_none()
    }

    /// The estimated number of distinct members.
    pub fn estimate(&self) -> u64 {
        let Some(registers) = &self.registers else {
            return 0;
        };
        let m = REGISTERS as f64;
        let mut sum = 0.0;
        let mut zeros = 0usize;
        for &register in registers.iter() {
            sum += 2f64.powi(-i32::from(register));
            if register == 0 {
                zeros += 1;
            }
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let raw = alpha * m * m / sum;
        // Small cardinalities: linear counting is far more accurate while registers are empty.
        let estimate = if raw <= 2.5 * m && zeros > 0 {
            m * (m / zeros as f64).ln()
        } else {
            raw
        };
        estimate.round() as u64
    }

    /// The registers as bytes, or `None` when empty.
    pub fn to_bytes(&self) -> Option<&[u8]> {
        self.registers.as_deref().map(|r| &r[..])
    }

    /// Rebuilds a sketch from [`Sketch::to_bytes`]; `None` when the length or a register is
    /// impossible.
    pub fn from_bytes(bytes: &[u8]) -> Option<Sketch> {
        let registers: [u8; REGISTERS] = bytes.try_into().ok()?;
        let max_rank = (64 - PRECISION + 1) as u8;
        if registers.iter().any(|&r| r > max_rank) {
            return None;
        }
        Some(Sketch {
            registers: Some(Box::new(registers)),
        })
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch::new()
    }
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch(~{})", self.estimate())
    }
}

/// On the wire: base64 of the registers, or an empty string for an empty sketch.
impl Serialize for Sketch {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.to_bytes() {
            Some(bytes) => serializer
                .serialize_str(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)),
            None => serializer.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for Sketch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() {
            return Ok(Sketch::new());
        }
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|e| serde::de::Error::custom(format!("sketch is not base64: {e}")))?;
        Sketch::from_bytes(&bytes).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "sketch must be {REGISTERS} registers of at most {}",
                64 - PRECISION + 1
            ))
        })
    }
}

/// A hash that is the same in every process and every version, so two instances put the same
/// client in the same register: FNV-1a, then a 64-bit finaliser to spread FNV's weak low bits.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(range: std::ops::Range<u32>) -> Sketch {
        let mut sketch = Sketch::new();
        for i in range {
            sketch.insert(format!("client-{i}").as_bytes());
        }
        sketch
    }

    fn assert_near(estimate: u64, truth: u64) {
        let error = (estimate as f64 - truth as f64).abs() / truth as f64;
        assert!(
            error < 0.08,
            "estimate {estimate} for {truth} distinct (error {error:.3})"
        );
    }

    #[test]
    fn estimates_within_a_few_percent_across_scales() {
        assert_eq!(Sketch::new().estimate(), 0);
        assert_eq!(filled(0..1).estimate(), 1);
        for truth in [10, 100, 1_000, 10_000, 100_000] {
            assert_near(filled(0..truth).estimate(), u64::from(truth));
        }
    }

    #[test]
    fn repeated_members_count_once() {
        let mut sketch = filled(0..500);
        for _ in 0..5 {
            sketch.merge(&filled(0..500));
        }
        assert_near(sketch.estimate(), 500);
    }

    #[test]
    fn merging_counts_the_union_not_the_sum() {
        let mut a = filled(0..6_000);
        let b = filled(4_000..10_000);
        a.merge(&b);
        assert_near(a.estimate(), 10_000);
    }

    #[test]
    fn survives_the_wire_and_rejects_garbage() {
        let sketch = filled(0..300);
        let json = serde_json::to_string(&sketch).unwrap();
        let back: Sketch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, sketch);
        assert_eq!(serde_json::to_string(&Sketch::new()).unwrap(), "\"\"");
        for bad in ["\"@@@\"", "\"AAAA\""] {
            let error = serde_json::from_str::<Sketch>(bad).unwrap_err().to_string();
            assert!(error.contains("sketch"), "{error}");
        }
        let impossible = base64::engine::general_purpose::STANDARD.encode([255u8; REGISTERS]);
        assert!(serde_json::from_str::<Sketch>(&format!("\"{impossible}\"")).is_err());
    }
}
