//! Files the app writes for the person: exports (the audit log, recovery kits).

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Writes `bytes` to a file of `dir` that did not exist: `{stem}.{ext}`, else `{stem} (2).{ext}`,
/// `{stem} (3).{ext}`, ... An export never replaces a file, an earlier export's or the person's.
/// On Unix the file is readable by its owner alone: an audit export names the workspace's agents
/// and credentials, and a recovery kit is the workspace's keys under a passphrase.
pub fn write_new(dir: &Path, stem: &str, ext: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    for n in 1..=1000 {
        let name = if n == 1 { format!("{stem}.{ext}") } else { format!("{stem} ({n}).{ext}") };
        let path = dir.join(name);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(mut file) => {
                file.write_all(bytes)?;
                file.sync_all()?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("{stem}.{ext} and 999 numbered copies already exist: move some away"),
    ))
}

#[cfg(test)]
mod tests {
    use super::write_new;

    #[test]
    fn an_export_never_replaces_a_file_and_numbers_the_next_one() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mine = dir.path().join("latchkey-audit.csv");
        std::fs::write(&mine, "the person's own file").expect("written");
        let first = write_new(dir.path(), "latchkey-audit", "csv", b"seq,kind\n1,a\n")
            .expect("a free name is found");
        let second = write_new(dir.path(), "latchkey-audit", "csv", b"seq,kind\n2,b\n")
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

    #[cfg(unix)]
    #[test]
    fn an_export_is_readable_by_its_owner_alone() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("a temporary folder");
        let kit = write_new(dir.path(), "latchkey-recovery-kit", "txt", b"LATCHKEY RECOVERY KIT")
            .expect("written");
        let mode = std::fs::metadata(&kit).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a kit or an audit export must not be readable by other users");
    }

    #[test]
    fn a_folder_that_cannot_be_written_is_an_error_not_a_loop() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let missing = dir.path().join("no-such-folder");
        let error = write_new(&missing, "latchkey-audit", "jsonl", b"{}")
            .expect_err("nothing can be created in a missing folder");
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    }
}
