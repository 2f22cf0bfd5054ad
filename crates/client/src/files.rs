//! Files written for the person, outside the profile: exports of the audit log and recovery
//! kits. They are never written over an existing file and, on Unix, are readable by their owner
//! alone (an audit export names the workspace's agents and credentials; a recovery kit is the
//! workspace's keys under a passphrase).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Options for writing a file only its owner may read (0600 on Unix); the caller adds how it is
/// created.
pub(crate) fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Writes `bytes` to `path`, which must not exist yet (`AlreadyExists` otherwise), flushed to
/// disk. A file left half-written by a failed write is removed.
pub fn create_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file = private_options().create_new(true).open(path)?;
    fill(file, path, bytes)
}

/// Writes `bytes` to a file of `dir` that did not exist: `{stem}.{ext}`, else `{stem} (2).{ext}`,
/// `{stem} (3).{ext}`, ... up to 1000 names, and returns its path. An export never replaces a
/// file, an earlier export's or the person's.
pub fn write_new_numbered(
    dir: &Path,
    stem: &str,
    ext: &str,
    bytes: &[u8],
) -> std::io::Result<PathBuf> {
    for n in 1..=1000 {
        let name = if n == 1 { format!("{stem}.{ext}") } else { format!("{stem} ({n}).{ext}") };
        let path = dir.join(name);
        match private_options().create_new(true).open(&path) {
            Ok(file) => return fill(file, &path, bytes).map(|()| path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{stem}.{ext} and 999 numbered copies already exist: move some away"),
    ))
}

/// Writes and syncs a file this module just created at `path`, removing it if that fails.
fn fill(mut file: File, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if written.is_err() {
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_never_replaces_a_file_and_numbers_the_next_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mine = dir.path().join("latchkey-audit.csv");
        std::fs::write(&mine, "the person's own file").expect("written");
        let first = write_new_numbered(dir.path(), "latchkey-audit", "csv", b"seq,kind\n1,a\n")
            .expect("a free name is found");
        let second = write_new_numbered(dir.path(), "latchkey-audit", "csv", b"seq,kind\n2,b\n")
            .expect("and another");
        assert_eq!(first, dir.path().join("latchkey-audit (2).csv"));
        assert_eq!(second, dir.path().join("latchkey-audit (3).csv"));
        assert_eq!(
            std::fs::read_to_string(&mine).expect("still there"),
            "the person's own file",
            "an existing file is never overwritten"
        );
        assert_eq!(std::fs::read(&second).expect("readable"), b"seq,kind\n2,b\n");
    }

    #[test]
    fn a_named_export_is_refused_over_an_existing_file() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let path = dir.path().join("kit.txt");
        create_new_private(&path, b"first").expect("a new file is written");
        let error = create_new_private(&path, b"second").expect_err("never over a file");
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists, "{error}");
        assert_eq!(std::fs::read(&path).expect("readable"), b"first", "the first is intact");
    }

    #[cfg(unix)]
    #[test]
    fn exports_are_readable_by_their_owner_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("a temporary folder");
        let numbered = write_new_numbered(
            dir.path(),
            "latchkey-recovery-kit",
            "txt",
            b"LATCHKEY RECOVERY KIT",
        )
        .expect("written");
        let named = dir.path().join("audit.jsonl");
        create_new_private(&named, b"{}\n").expect("written");
        for path in [numbered, named] {
            let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: an export must not be readable by others", path.display());
        }
    }

    #[test]
    fn a_folder_that_cannot_be_written_is_an_error_not_a_loop() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let missing = dir.path().join("no-such-folder");
        let error = write_new_numbered(&missing, "latchkey-audit", "jsonl", b"{}")
            .expect_err("nothing can be created in a missing folder");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    }
}
