//! The stock guards built into the binary, named in a configuration as `module =
//! "builtin:rate-limit"`, so that a `vigil` from `cargo install` runs them on a machine with no
//! WebAssembly toolchain.
//!
//! The components are committed under `proxy/builtin/`, built from `example-guards/` by
//! `scripts/refresh-builtin.sh` and embedded here. A build script compiling them instead would
//! need the wasm32-wasip2 target on every machine that installs Vigil, which is what this
//! avoids. `tests/tests/builtin_guards.rs` keeps the committed files honest: it fails when the
//! sources they were built from changed, and when they decide differently from the guards the
//! test suite builds from source.

use std::path::Path;
use vigil_host::GuardSource;

/// The prefix of a `module` that names a built-in guard instead of a file.
pub const PREFIX: &str = "builtin:";

/// One stock guard compiled into the binary.
#[derive(Debug)]
pub struct Builtin {
    /// Its name after `builtin:`, the crate's name in `example-guards/`.
    pub name: &'static str,
    /// The component.
    pub wasm: &'static [u8],
}

/// Every built-in guard, sorted by name.
pub const ALL: &[Builtin] = &[
    Builtin {
        name: "credential-stuffing",
        wasm: include_bytes!("../builtin/credential-stuffing.wasm"),
    },
    Builtin {
        name: "enumeration",
        wasm: include_bytes!("../builtin/enumeration.wasm"),
    },
    Builtin {
        name: "login-throttle",
        wasm: include_bytes!("../builtin/login-throttle.wasm"),
    },
    Builtin {
        name: "probing",
        wasm: include_bytes!("../builtin/probing.wasm"),
    },
    Builtin {
        name: "rate-limit",
        wasm: include_bytes!("../builtin/rate-limit.wasm"),
    },
    Builtin {
        name: "sequence",
        wasm: include_bytes!("../builtin/sequence.wasm"),
    },
    Builtin {
        name: "signatures",
        wasm: include_bytes!("../builtin/signatures.wasm"),
    },
];

/// The built-in guard called `name` (without the prefix), or an error naming it and every
/// known name.
pub fn find(name: &str) -> Result<&'static Builtin, String> {
    ALL.iter().find(|b| b.name == name).ok_or_else(|| {
        let known: Vec<String> = ALL.iter().map(|b| format!("{PREFIX}{}", b.name)).collect();
        format!(
            "unknown built-in guard {:?}; the built-in guards are {}",
            format!("{PREFIX}{name}"),
            known.join(", ")
        )
    })
}

/// Where the component of `module` comes from: a built-in guard when it starts with
/// `builtin:`, else a file, relative to `base` when it is relative.
pub fn source(module: &Path, base: &Path) -> Result<GuardSource, String> {
    match module.to_str().and_then(|m| m.strip_prefix(PREFIX)) {
        Some(name) => Ok(GuardSource::Bytes(find(name)?.wasm.to_vec())),
        None => Ok(GuardSource::File(base.join(module))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_a_component() {
        // The component-model layer of the binary format: version 0x0d, layer 1.
        for b in ALL {
            assert_eq!(
                &b.wasm[..8],
                b"\0asm\x0d\0\x01\0",
                "{} is not a component",
                b.name
            );
        }
        let mut names: Vec<&str> = ALL.iter().map(|b| b.name).collect();
        names.sort_unstable();
        assert_eq!(names, ALL.iter().map(|b| b.name).collect::<Vec<_>>());
    }

    #[test]
    fn a_builtin_module_is_its_bytes_and_a_path_stays_a_file() {
        let base = Path::new("/etc/vigil");
        match source(Path::new("builtin:rate-limit"), base) {
            Ok(GuardSource::Bytes(bytes)) => assert_eq!(bytes, find("rate-limit").unwrap().wasm),
            other => panic!("expected the built-in bytes, got {other:?}"),
        }
        match source(Path::new("guards/rate_limit.wasm"), base) {
            Ok(GuardSource::File(path)) => {
                assert_eq!(path, Path::new("/etc/vigil/guards/rate_limit.wasm"))
            }
            other => panic!("expected a file, got {other:?}"),
        }
        // A file whose name starts with the prefix is still reachable as a path.
        assert!(matches!(
            source(Path::new("./builtin:odd.wasm"), base),
            Ok(GuardSource::File(_))
        ));
    }

    #[test]
    fn an_unknown_builtin_names_itself_and_every_known_one() {
        let error = source(Path::new("builtin:rate_limit"), Path::new("/")).unwrap_err();
        assert_eq!(
            error,
            "unknown built-in guard \"builtin:rate_limit\"; the built-in guards are \
             builtin:credential-stuffing, builtin:enumeration, builtin:login-throttle, \
             builtin:probing, builtin:rate-limit, builtin:sequence, builtin:signatures"
        );
    }
}
