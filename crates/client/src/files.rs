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
    let mut file = NewFile::create(path)?;
    file.write_all(bytes)?;
    file.finish().map(drop)
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
    let mut file = NewFile::numbered(dir, stem, ext)?;
    file.write_all(bytes)?;
    file.finish()
}

/// A file this module created and is still writing: an export received a chunk at a time. It
/// becomes the person's only through [`NewFile::finish`]; dropped before that (a failed write,
/// a broken download, an error between two chunks), it is removed, so a half-written export is
/// never left behind looking whole.
#[derive(Debug)]
pub struct NewFile {
    /// `None` once finished.
    file: Option<File>,
    path: PathBuf,
    written: u64,
}

impl NewFile {
    /// Creates `path`, which must not exist yet (`AlreadyExists` otherwise).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = private_options().create_new(true).open(path)?;
        Ok(Self { file: Some(file), path: path.to_owned(), written: 0 })
    }

    /// Creates the first free name of `dir` among `{stem}.{ext}`, `{stem} (2).{ext}`, ... up to
    /// 1000 names.
    pub fn numbered(dir: &Path, stem: &str, ext: &str) -> std::io::Result<Self> {
        for n in 1..=1000 {
            let name = if n == 1 { format!("{stem}.{ext}") } else { format!("{stem} ({n}).{ext}") };
            match Self::create(&dir.join(name)) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                created => return created,
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{stem}.{ext} and 999 numbered copies already exist: move some away"),
        ))
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let file = self.file.as_mut().ok_or_else(|| {
            std::io::Error::other("the file was already finished: nothing more is written to it")
        })?;
        file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Flushes the file to disk and keeps it; returns its path. A file that cannot be flushed
    /// is removed.
    pub fn finish(mut self) -> std::io::Result<PathBuf> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| std::io::Error::other("the file was already finished"))?;
        file.sync_all()?;
        self.file = None;
        Ok(std::mem::take(&mut self.path))
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
            let _ = std::fs::remove_file(&self.path);
        }
    }
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
    fn a_file_dropped_before_it_is_finished_is_removed_and_a_finished_one_kept() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let mut broken = NewFile::numbered(dir.path(), "latchkey-audit", "jsonl").expect("made");
        broken.write_all(b"{\"seq\":1}\n").expect("a first chunk");
        let path = broken.path().to_owned();
        assert!(path.exists(), "the file exists while it is written");
        drop(broken);
        assert!(!path.exists(), "a download that broke off leaves no half-written export");

        let mut whole = NewFile::numbered(dir.path(), "latchkey-audit", "jsonl").expect("made");
        assert_eq!(whole.path(), path, "the removed file's name is free again");
        whole.write_all(b"{\"seq\":1}\n").expect("a chunk");
        whole.write_all(b"{\"seq\":2}\n").expect("another");
        assert_eq!(whole.written(), 20);
        let kept = whole.finish().expect("flushed");
        assert_eq!(std::fs::read(&kept).expect("kept"), b"{\"seq\":1}\n{\"seq\":2}\n");
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
