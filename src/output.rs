//! Files the toolkit writes (CSV tables, SVG plots, reports), written atomically: the
//! bytes go to a fresh temporary file in the target's own directory, which is flushed to
//! disk and then renamed over the target. A reader therefore sees either the old file or
//! the complete new one, never a half-written file, even if the process dies mid-write
//! (a rename within one directory is atomic on POSIX file systems).
//!
//! The target's directory must exist: a missing directory is an error
//! ([`OutputError::MissingDirectory`], a bad argument), not something created silently.
//! [`check_target`] lets a command reject a bad path before a long computation.
//!
//! ```
//! use hasme::output::{OutputError, write_atomic};
//!
//! let dir = std::env::temp_dir().join(format!("hasme-doc-output-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("table.csv");
//! write_atomic(&path, b"step,w2\n0,0\n")?;
//! assert_eq!(std::fs::read_to_string(&path).unwrap(), "step,w2\n0,0\n");
//!
//! let err = write_atomic(dir.join("no-such-dir/table.csv"), b"x").unwrap_err();
//! assert!(matches!(err, OutputError::MissingDirectory { .. }));
//! assert_eq!(err.kind(), hasme::ErrorKind::Input);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), OutputError>(())
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ErrorKind;

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The directory that should hold the file does not exist (or is not a directory).
    #[error("cannot write `{path}`: the directory `{directory}` does not exist (create it first)")]
    MissingDirectory {
        /// The file asked for.
        path: PathBuf,
        /// Its parent directory.
        directory: PathBuf,
    },
    /// The path names a directory, or has no file name.
    #[error("cannot write `{path}`: {reason}")]
    BadPath {
        /// The file asked for.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The system refused a step (permissions, disk full, …).
    #[error("cannot write `{path}`: {message}")]
    Io {
        /// The file asked for.
        path: PathBuf,
        /// The system's reason, with the step that failed.
        message: String,
    },
}

impl OutputError {
    /// A bad path is the caller's input; a refusal of the system while writing is a
    /// failure while running.
    pub fn kind(&self) -> ErrorKind {
        match self {
            OutputError::MissingDirectory { .. } | OutputError::BadPath { .. } => ErrorKind::Input,
            OutputError::Io { .. } => ErrorKind::Run,
        }
    }
}

/// The directory that holds `path` (`.` for a bare file name).
fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks, without writing anything, that `path` could be written: its directory
/// exists and the path is not itself a directory. Commands call it before computing so
/// that a typo in an output path fails at once.
pub fn check_target(path: impl AsRef<Path>) -> Result<(), OutputError> {
    let path = path.as_ref();
    if path.file_name().is_none() {
        return Err(OutputError::BadPath {
            path: path.to_path_buf(),
            reason: "the path has no file name",
        });
    }
    let directory = directory_of(path);
    if !directory.is_dir() {
        return Err(OutputError::MissingDirectory {
            path: path.to_path_buf(),
            directory,
        });
    }
    if path.is_dir() {
        return Err(OutputError::BadPath {
            path: path.to_path_buf(),
            reason: "it is a directory",
        });
    }
    Ok(())
}

/// Distinguishes temporary files of concurrent writers within one process; the process
/// id distinguishes processes.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a temporary file in the same directory
/// (`.NAME.PID.N.tmp`, created exclusively), flushed with `sync_all`, then renamed over
/// `path`. On any failure the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), OutputError> {
    let path = path.as_ref();
    check_target(path)?;
    let directory = directory_of(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let io = |step: &str, e: std::io::Error| OutputError::Io {
        path: path.to_path_buf(),
        message: format!("{step}: {e}"),
    };
    // A few attempts in case a stale temporary file of a dead process has the same name.
    let mut attempt = 0;
    let (temp, mut file) = loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temp = directory.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => break (temp, file),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                attempt += 1;
            }
            Err(e) => return Err(io("creating a temporary file", e)),
        }
    };
    let written = write_and_sync(&mut file, bytes)
        .map_err(|e| io("writing the temporary file", e))
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, path).map_err(|e| io("renaming the temporary file", e))
        });
    if written.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&temp);
    }
    written
}

fn write_and_sync(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hasme-output-{name}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("readable")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = temp_dir("replace");
        let path = dir.join("out.csv");
        fs::write(
            &path,
            "a much longer old content that must disappear entirely\n",
        )
        .unwrap();
        write_atomic(&path, b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(entries(&dir), vec!["out.csv".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_a_bad_argument_and_creates_nothing() {
        let dir = temp_dir("missing");
        let path = dir.join("absent").join("out.svg");
        let err = write_atomic(&path, b"<svg/>").unwrap_err();
        assert!(matches!(err, OutputError::MissingDirectory { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Input);
        assert!(err.to_string().contains("does not exist"), "{err}");
        assert!(entries(&dir).is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_as_target_fails_before_writing() {
        let dir = temp_dir("isdir");
        let target = dir.join("sub");
        fs::create_dir(&target).unwrap();
        let err = write_atomic(&target, b"x").unwrap_err();
        assert!(matches!(err, OutputError::BadPath { .. }), "{err}");
        assert_eq!(entries(&dir), vec!["sub".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_concurrent_reader_sees_the_old_or_the_new_file_never_a_mix() {
        // Two contents of different lengths and bytes; 40 rewrites while another thread
        // reads in a loop. A non-atomic write (truncate, then write) would show an empty
        // or a partial file to the reader with high probability at 64 KiB per write.
        let dir = temp_dir("concurrent");
        let path = dir.join("out.txt");
        let a = vec![b'a'; 64 * 1024];
        let b = vec![b'b'; 48 * 1024];
        write_atomic(&path, &a).unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (path, done, a, b) = (path.clone(), done.clone(), a.clone(), b.clone());
            std::thread::spawn(move || {
                let mut reads = 0usize;
                while !done.load(Ordering::Relaxed) || reads == 0 {
                    let seen = fs::read(&path).expect("the target always exists");
                    assert!(
                        seen == a || seen == b,
                        "partial file of {} bytes",
                        seen.len()
                    );
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..40 {
            write_atomic(&path, if i % 2 == 0 { &b } else { &a }).unwrap();
        }
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("reader thread") > 0);
        assert_eq!(entries(&dir), vec!["out.txt".to_string()]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bare_file_names_go_to_the_current_directory() {
        assert_eq!(directory_of(Path::new("out.csv")), PathBuf::from("."));
        assert_eq!(directory_of(Path::new("a/out.csv")), PathBuf::from("a"));
        assert!(matches!(
            check_target(Path::new("/")),
            Err(OutputError::BadPath { .. })
        ));
    }
}
