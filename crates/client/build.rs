//! Compiles the provider catalog in: lists `providers/*.toml` and writes
//! `$OUT_DIR/providers.rs`, one `include_str!` per file, sorted by file name. The files are parsed
//! and checked by `latchkey_client::catalog` (and its schema test), not here.

#![allow(clippy::print_stdout, reason = "cargo reads build script directives from stdout")]

use std::error::Error;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("providers");
    println!("cargo::rerun-if-changed=providers");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let name = entry?.file_name().into_string().map_err(|name| {
            format!("providers/{}: file names must be UTF-8", name.to_string_lossy())
        })?;
        if name.ends_with(".toml") {
            names.push(name);
        }
    }
    names.sort();
    let mut code = String::from(
        "/// The provider files: (file name, contents), sorted by file name.\n\
         pub(super) static FILES: &[(&str, &str)] = &[\n",
    );
    for name in &names {
        // `{:?}` writes a Rust string literal, escapes included.
        let path = format!("/providers/{name}");
        writeln!(
            code,
            "    ({name:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {path:?}))),"
        )?;
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("providers.rs");
    std::fs::write(out, code)?;
    Ok(())
}
