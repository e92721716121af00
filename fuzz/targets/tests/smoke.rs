//! The smoke run of the fuzz targets, under a plain `cargo test`: each target gets its seed
//! corpus (`fuzz/corpus/<name>/`) and then a fixed number of deterministic mutations of the
//! seeds, made by a small xorshift generator. Not a fuzzer (nothing steers it toward new code),
//! but it keeps every target building and its properties holding on realistic inputs and
//! their near misses, in CI, in seconds. A failure names the target, shows the input and saves
//! it to a file that `cargo fuzz run <name> <file>` replays.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use vigil_fuzz_targets::TARGETS;

/// Mutated inputs per target, after its seeds.
const MUTATIONS: usize = 5_000;
/// Mutations grow inputs no longer than this.
const MAX_LEN: usize = 4_096;

/// Bytes that are structure to one parser or another, inserted and overwritten by mutations.
const TOKENS: &[&[u8]] = &[
    b"\"",
    b",",
    b";",
    b"=",
    b":",
    b"[",
    b"]",
    b"{",
    b"}",
    b"/",
    b"//",
    b"*",
    b"**",
    b"\\",
    b"\n",
    b" ",
    b"\t",
    b".",
    b"..",
    b"-",
    b"_",
    b"#",
    b"%2F",
    b"\0",
    b"\xff",
    b"\xc3\xa9",
    b"for=",
    b"by=",
    b"unknown",
    b"_hidden",
    b"::ffff:",
    b"10.0.0.2",
    b"203.0.113.9",
    b"[2001:db8::1]:443",
    b"Bearer ",
    b"{id}",
    b"{name}.json",
    b"GET ",
    b"* ",
    b"ms",
    b"s",
    b"d",
    b"0",
    b"-1",
    b"99999999999999999999",
    b"18446744073709551615",
    b"true",
    b"null",
    b"[]",
    b"{}",
    b"\"\"",
    b"[[guard]]\n",
    b"[report]\n",
    b"x-",
    b"openapi: 3.0.0\n",
    b"paths:\n",
    b"servers:\n  - url: /v1\n",
    b"&anchor ",
    b"*anchor",
    b"!!binary ",
    b"\\u0000",
    b"1e400",
];

/// A xorshift64 generator: deterministic, and enough for picking mutations.
struct XorShift(u64);

impl XorShift {
    /// A generator of its own for each target, the same on every run.
    fn for_target(name: &str) -> XorShift {
        let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number below `n` (which must not be 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// One to four random edits of a random seed: bit flips, overwrites and insertions of bytes
/// and tokens, deletions, duplications, truncations and splices with another seed.
fn mutate(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(8) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                let token = TOKENS[rng.below(TOKENS.len())];
                input[i] = token[0];
            }
            2 => {
                let byte = rng.byte();
                input.insert(at, byte);
            }
            3 => {
                let token = TOKENS[rng.below(TOKENS.len())];
                input.splice(at..at, token.iter().copied());
            }
            4 => {
                let len = rng.below(input.len() - at + 1);
                input.drain(at..at + len);
            }
            5 => {
                let len = rng.below((input.len() - at).min(64) + 1);
                let copy = input[at..at + len].to_vec();
                let to = rng.below(input.len() + 1);
                input.splice(to..to, copy);
            }
            6 => input.truncate(at),
            _ => {
                let other = &seeds[rng.below(seeds.len())];
                let from = rng.below(other.len() + 1);
                input.truncate(at);
                input.extend_from_slice(&other[from..]);
            }
        }
    }
    input.truncate(MAX_LEN);
    input
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the targets crate is inside fuzz/")
        .to_path_buf()
}

/// A target's seed corpus, in file-name order.
fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fuzz_dir().join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable corpus directory").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (path.display().to_string(), bytes)
        })
        .collect()
}

/// Writes a failing input where `cargo fuzz run <name> <file>` can replay it; returns the path.
fn save(name: &str, input: &[u8]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-smoke");
    let file = dir.join(format!("{name}-failure"));
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, input)) {
        Ok(()) => file.display().to_string(),
        Err(e) => format!("nowhere ({e})"),
    }
}

fn smoke(name: &str) {
    let (_, target) = TARGETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no target {name}"));
    let seeds = seeds(name);
    assert!(
        seeds.len() >= 3,
        "{name}: the seed corpus has {} files",
        seeds.len()
    );
    let run = |what: &str, input: &[u8]| {
        if let Err(cause) = panic::catch_unwind(AssertUnwindSafe(|| target(input))) {
            let message = cause
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| cause.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            let saved = save(name, input);
            panic!(
                "target {name} failed on {what}: {message}\ninput ({} bytes, saved as {saved}): \"{}\"",
                input.len(),
                input.escape_ascii()
            );
        }
    };
    for (file, bytes) in &seeds {
        run(file, bytes);
    }
    let bytes: Vec<Vec<u8>> = seeds.into_iter().map(|(_, bytes)| bytes).collect();
    let mut rng = XorShift::for_target(name);
    for i in 0..MUTATIONS {
        let input = mutate(&mut rng, &bytes);
        run(&format!("mutation {i}"), &input);
    }
}

macro_rules! smoke_tests {
    ($($(#[$attr:meta])* $name:ident,)*) => {
        $(
            $(#[$attr])*
            #[test]
            fn $name() {
                smoke(stringify!($name));
            }
        )*

        /// Every target has a test here, a seed corpus and a cargo-fuzz binary calling it.
        #[test]
        fn every_target_is_wired_up() {
            let tested: &[&str] = &[$($(#[$attr])* stringify!($name),)*];
            let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
            for (name, _) in TARGETS {
                assert!(tested.contains(name), "{name} has no smoke test");
                let binary = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
                let source = std::fs::read_to_string(&binary)
                    .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
                assert!(
                    source.contains(&format!("vigil_fuzz_targets::{name}::fuzz")),
                    "{} does not call its target",
                    binary.display()
                );
                assert!(
                    manifest.contains(&format!("name = \"{name}\"")),
                    "fuzz/Cargo.toml has no [[bin]] {name}"
                );
            }
            // With every feature on, every binary is some target's.
            if cfg!(all(feature = "host", feature = "proxy")) {
                for entry in std::fs::read_dir(fuzz_dir().join("fuzz_targets")).unwrap() {
                    let path = entry.unwrap().path();
                    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                    assert!(
                        TARGETS.iter().any(|(name, _)| *name == stem),
                        "{} is no target's binary",
                        path.display()
                    );
                }
            }
        }
    };
}

smoke_tests! {
    duration,
    route_pattern,
    #[cfg(feature = "host")]
    packed_request,
    #[cfg(feature = "host")]
    packed_response,
    #[cfg(feature = "proxy")]
    config,
    #[cfg(feature = "proxy")]
    forwarded,
    #[cfg(feature = "proxy")]
    jwt_sub,
    #[cfg(feature = "proxy")]
    openapi,
    #[cfg(feature = "proxy")]
    path,
    #[cfg(feature = "proxy")]
    report,
    #[cfg(feature = "proxy")]
    route_template,
}
