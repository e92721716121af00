//! A valid component of another world, which Vigil must refuse to load as a guard.

wit_bindgen::generate!({ path: "wit", world: "other" });

struct Other;

impl Guest for Other {
    fn run() -> u32 {
        42
    }
}

export!(Other);
