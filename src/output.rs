//! Files the toolkit writes (`--out`, CSV tables, SVG plots, reports), written so that
//! what is already there is never damaged. [`write_atomic`] looks at what the path names
//! now:
//!
//! * **A regular file, or nothing yet**: the bytes go to a fresh temporary file in the
//!   file's own directory, which gets the old file's permission bits (`rwx` for user,
//!   group and others; a new file gets the umask's), is flushed to disk and then renamed
//!   over the file. A reader sees the old file or the complete new one, never a
//!   half-written file, even if the process dies mid-write (a rename within one
//!   directory is atomic on POSIX file systems). The new file belongs to whoever runs
//!   the command.
//! * **A symbolic link**, or a chain of them, is written through: each link is followed
//!   (a relative target read against the directory of the link that holds it) to the
//!   final target, which is replaced as above with its temporary file in the *target's*
//!   directory. The links stay links; a dangling link creates its target.
//! * **Anything else that exists** (a character or block device such as `/dev/full`, a
//!   FIFO, a socket) is opened for writing as it is — no creation, no truncation, no
//!   rename — and written directly, so it is never replaced; opening a FIFO waits for
//!   its reader. Links inside `/proc`, where `/dev/stdout` and `/dev/fd/N` lead, name
//!   open descriptors rather than paths: they too are written directly, appending when
//!   the descriptor is a regular file (standard output redirected with `>` or `>>`).
//!
//! A failure while writing leaves no temporary file behind and the target as it was
//! (a device may have taken part of the bytes). The target's directory must exist: a
//! missing directory is an error ([`OutputError::MissingDirectory`], a bad argument),
//! not something created silently; so is a directory as the target, or a loop of links.
//! [`check_target`] makes these checks without writing, so that a command rejects a bad
//! path before a long computation.
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
    /// For a dangling link it is the directory of the link's final target.
    #[error("cannot write `{path}`: the directory `{directory}` does not exist (create it first)")]
    MissingDirectory {
        /// The file asked for.
        path: PathBuf,
        /// The directory that should hold it.
        directory: PathBuf,
    },
    /// The path names a directory, has no file name, or is a loop of links.
    #[error("cannot write `{path}`: {reason}")]
    BadPath {
        /// The file asked for.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The system refused a step (permissions, disk full, a closed FIFO, …).
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

/// Most links followed in one chain (Linux's own limit), so that a loop ends.
const MAX_LINKS: usize = 40;

/// How a path is written, decided by what it names when it is looked at.
#[derive(Debug, PartialEq)]
enum Plan {
    /// A regular file or nothing: `target` (the path with its links followed) is replaced
    /// atomically, the new file taking `mode`, the old file's permission bits.
    Replace { target: PathBuf, mode: Option<u32> },
    /// Something that must not be replaced (a device, a FIFO, a socket, an open
    /// descriptor): opened as it is and written, appending to a regular file reached
    /// through a descriptor.
    Direct { append: bool },
}

/// "Not there": the path or one of its directories does not exist.
fn is_missing(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
    )
}

/// Looks at what `path` names and decides how to write it; every error a path can be
/// blamed for is found here, before anything is written.
fn plan(path: &Path) -> Result<Plan, OutputError> {
    let bad = |reason| OutputError::BadPath {
        path: path.to_path_buf(),
        reason,
    };
    if path.file_name().is_none() {
        return Err(bad("the path has no file name"));
    }
    let (target, descriptor) = follow_links(path)?;
    // The system's own view, through every link: what an open() would reach.
    match fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(bad("it is a directory")),
        Ok(m) if m.is_file() && !descriptor => Ok(Plan::Replace {
            target,
            mode: permission_bits(&m),
        }),
        Ok(m) => Ok(Plan::Direct {
            append: m.is_file(),
        }),
        Err(e) if is_missing(&e) => {
            if target.file_name().is_none() {
                return Err(bad("its link leads to a path with no file name"));
            }
            let directory = directory_of(&target);
            if !directory.is_dir() {
                return Err(OutputError::MissingDirectory {
                    path: path.to_path_buf(),
                    directory,
                });
            }
            Ok(Plan::Replace { target, mode: None })
        }
        Err(e) => Err(OutputError::Io {
            path: path.to_path_buf(),
            message: format!("looking it up: {e}"),
        }),
    }
}

/// Follows the chain of symbolic links that starts at `path` to the first path that is
/// not a link (or does not exist). The second value says the chain reached a link
/// inside `/proc`, which names an open descriptor, not a path, and is not followed.
fn follow_links(path: &Path) -> Result<(PathBuf, bool), OutputError> {
    let io = |at: &Path, e: std::io::Error| OutputError::Io {
        path: path.to_path_buf(),
        message: format!("looking up `{}`: {e}", at.display()),
    };
    let mut current = path.to_path_buf();
    for _ in 0..=MAX_LINKS {
        match fs::symlink_metadata(&current) {
            Ok(m) if m.file_type().is_symlink() => {
                if names_a_descriptor(&directory_of(&current)) {
                    return Ok((current, true));
                }
                let link = fs::read_link(&current).map_err(|e| io(&current, e))?;
                // Read against the link's directory as written (`a` for `a/link`, nothing
                // for a bare `link`); an absolute target replaces it in the join.
                current = match current.parent() {
                    Some(parent) => parent.join(link),
                    None => link,
                };
            }
            Ok(_) => return Ok((current, false)),
            Err(e) if is_missing(&e) => return Ok((current, false)),
            Err(e) => return Err(io(&current, e)),
        }
    }
    Err(OutputError::BadPath {
        path: path.to_path_buf(),
        reason: "its links form a loop (or a chain of more than 40)",
    })
}

/// Whether links in `directory` stand for open descriptors (`/proc/self/fd/1`, where
/// `/dev/stdout` leads): true for anything under `/proc` on Linux.
fn names_a_descriptor(directory: &Path) -> bool {
    cfg!(target_os = "linux") && fs::canonicalize(directory).is_ok_and(|d| d.starts_with("/proc"))
}

/// The permission bits a replacement keeps: read, write and execute for user, group and
/// others (not set-id or sticky bits, which a file of output has no use for).
#[cfg(unix)]
fn permission_bits(m: &fs::Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(m.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn permission_bits(_: &fs::Metadata) -> Option<u32> {
    None
}

/// Checks, without writing anything, that `path` could be written: it has a file name,
/// it is not a directory (through its links), its links end, and the directory that
/// would hold a new file exists. Commands call it before computing so that a typo in an
/// output path fails at once. A device or FIFO passes: whether it takes the bytes is
/// known only when writing.
pub fn check_target(path: impl AsRef<Path>) -> Result<(), OutputError> {
    plan(path.as_ref()).map(|_| ())
}

/// Distinguishes temporary files of concurrent writers within one process; the process
/// id distinguishes processes.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` without damaging what is there (see the [module
/// docs](self)): a regular file, new or old, reached directly or through links, is
/// replaced atomically — a temporary file in its directory (`.NAME.PID.N.tmp`, created
/// exclusively, given the old file's permission bits), flushed with `sync_all`, renamed
/// over it; on any failure the temporary file is removed and the file is left as it
/// was. A device, FIFO or socket is opened without truncation and written directly.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), OutputError> {
    let path = path.as_ref();
    match plan(path)? {
        Plan::Replace { target, mode } => replace(path, &target, mode, bytes),
        Plan::Direct { append } => write_directly(path, append, bytes),
    }
}

/// Replaces `target` (what `path` leads to) by a renamed temporary file.
fn replace(path: &Path, target: &Path, mode: Option<u32>, bytes: &[u8]) -> Result<(), OutputError> {
    let directory = directory_of(target);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let io = |step: String, e: std::io::Error| OutputError::Io {
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
            Err(e) => {
                let step = format!("creating a temporary file in `{}`", directory.display());
                return Err(io(step, e));
            }
        }
    };
    // The permissions are set before any byte is written, so a private file's new
    // content is never readable by others, not even for a moment.
    let written = set_permission_bits(&file, mode)
        .map_err(|e| io("setting the temporary file's permissions".into(), e))
        .and_then(|()| {
            write_and_sync(&mut file, bytes).map_err(|e| io("writing the temporary file".into(), e))
        })
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, target).map_err(|e| {
                let step = format!("renaming the temporary file to `{}`", target.display());
                io(step, e)
            })
        });
    if written.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&temp);
    }
    written
}

#[cfg(unix)]
fn set_permission_bits(file: &File, mode: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match mode {
        Some(mode) => file.set_permissions(fs::Permissions::from_mode(mode)),
        None => Ok(()),
    }
}

#[cfg(not(unix))]
fn set_permission_bits(_: &File, _: Option<u32>) -> std::io::Result<()> {
    Ok(())
}

fn write_and_sync(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

/// Writes into what `path` names as it is: no creation, no truncation, no rename.
fn write_directly(path: &Path, append: bool, bytes: &[u8]) -> Result<(), OutputError> {
    let io = |step: &str, e: std::io::Error| OutputError::Io {
        path: path.to_path_buf(),
        message: format!("{step}: {e}"),
    };
    let mut file = OpenOptions::new()
        .write(true)
        .append(append)
        .open(path)
        .map_err(|e| io("opening it for writing", e))?;
    file.write_all(bytes)
        .and_then(|()| file.flush())
        .map_err(|e| io("writing", e))
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

    #[cfg(unix)]
    mod unix {
        use super::*;
        use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};

        fn is_link(path: &Path) -> bool {
            fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
        }

        fn mode(path: &Path) -> u32 {
            fs::metadata(path).unwrap().permissions().mode() & 0o7777
        }

        #[test]
        fn a_link_is_written_through_and_stays_a_link() {
            // The target in another directory: its temporary file goes there, not
            // beside the link (a rename across file systems would fail).
            let links = temp_dir("link");
            let files = temp_dir("link-target");
            let target = files.join("r.json");
            fs::write(&target, "old").unwrap();
            let link = links.join("link.json");
            symlink(&target, &link).unwrap();
            write_atomic(&link, b"new\n").unwrap();
            assert!(is_link(&link));
            assert_eq!(fs::read_link(&link).unwrap(), target);
            assert_eq!(fs::read_to_string(&target).unwrap(), "new\n");
            assert_eq!(entries(&links), ["link.json"]);
            assert_eq!(entries(&files), ["r.json"]);
            fs::remove_dir_all(&links).unwrap();
            fs::remove_dir_all(&files).unwrap();
        }

        #[test]
        fn chains_of_relative_links_are_read_from_each_link_s_directory() {
            // dir/a -> sub/b (relative to dir), dir/sub/b -> ../data/r.txt (relative to
            // dir/sub), so the file is dir/data/r.txt; dir/sub/r.txt must not appear.
            let dir = temp_dir("chain");
            fs::create_dir(dir.join("sub")).unwrap();
            fs::create_dir(dir.join("data")).unwrap();
            symlink("sub/b", dir.join("a")).unwrap();
            symlink("../data/r.txt", dir.join("sub/b")).unwrap();
            write_atomic(dir.join("a"), b"x\n").unwrap();
            assert_eq!(fs::read_to_string(dir.join("data/r.txt")).unwrap(), "x\n");
            assert!(is_link(&dir.join("a")) && is_link(&dir.join("sub/b")));
            assert_eq!(entries(&dir.join("sub")), ["b"]);
            assert_eq!(entries(&dir.join("data")), ["r.txt"]);
            // Once the target exists it is replaced through the same chain.
            write_atomic(dir.join("a"), b"y\n").unwrap();
            assert_eq!(fs::read_to_string(dir.join("data/r.txt")).unwrap(), "y\n");
            assert_eq!(entries(&dir), ["a", "data", "sub"]);
            fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_dangling_link_creates_its_target_unless_its_directory_is_missing() {
            let dir = temp_dir("dangling");
            symlink("made.txt", dir.join("link")).unwrap();
            write_atomic(dir.join("link"), b"made\n").unwrap();
            assert_eq!(fs::read_to_string(dir.join("made.txt")).unwrap(), "made\n");
            assert!(is_link(&dir.join("link")));

            symlink("nowhere/x.txt", dir.join("lost")).unwrap();
            let err = check_target(dir.join("lost")).unwrap_err();
            assert!(
                matches!(&err, OutputError::MissingDirectory { directory, .. }
                    if directory == &dir.join("nowhere")),
                "{err}"
            );
            assert_eq!(err.kind(), ErrorKind::Input);
            assert!(write_atomic(dir.join("lost"), b"x").is_err());
            assert_eq!(entries(&dir), ["link", "lost", "made.txt"]);
            fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_loop_of_links_is_a_bad_path() {
            let dir = temp_dir("loop");
            symlink("b", dir.join("a")).unwrap();
            symlink("a", dir.join("b")).unwrap();
            let err = check_target(dir.join("a")).unwrap_err();
            assert!(matches!(err, OutputError::BadPath { .. }), "{err}");
            assert!(err.to_string().contains("loop"), "{err}");
            // A link to a directory is a directory.
            fs::create_dir(dir.join("d")).unwrap();
            symlink("d", dir.join("to-d")).unwrap();
            let err = check_target(dir.join("to-d")).unwrap_err();
            assert!(err.to_string().contains("directory"), "{err}");
            assert_eq!(entries(&dir), ["a", "b", "d", "to-d"]);
            fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_replaced_file_keeps_its_permission_bits() {
            let dir = temp_dir("mode");
            let path = dir.join("private.json");
            fs::write(&path, "old").unwrap();
            for bits in [0o600, 0o640, 0o755] {
                fs::set_permissions(&path, fs::Permissions::from_mode(bits)).unwrap();
                write_atomic(&path, b"new").unwrap();
                assert_eq!(mode(&path), bits, "{bits:o}");
            }
            // Through a link, the target's bits are kept (a link's own mean nothing).
            symlink("private.json", dir.join("link")).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
            write_atomic(dir.join("link"), b"newer").unwrap();
            assert_eq!(mode(&path), 0o604);
            assert_eq!(fs::read_to_string(&path).unwrap(), "newer");
            fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_fifo_is_written_directly_and_stays_a_fifo() {
            let dir = temp_dir("fifo");
            let fifo = dir.join("pipe");
            let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
            assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
            assert_eq!(plan(&fifo).unwrap(), Plan::Direct { append: false });
            let reader = {
                let fifo = fifo.clone();
                std::thread::spawn(move || fs::read(fifo).expect("read the FIFO"))
            };
            let bytes = vec![b'z'; 200_000]; // more than a pipe holds: the reader drains it
            write_atomic(&fifo, &bytes).unwrap();
            assert_eq!(reader.join().unwrap(), bytes);
            assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
            assert_eq!(entries(&dir), ["pipe"]);
            fs::remove_dir_all(&dir).unwrap();
        }

        #[test]
        fn a_socket_refuses_the_write_as_a_run_failure_and_stays_a_socket() {
            let dir = temp_dir("socket");
            let path = dir.join("sock");
            let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
            check_target(&path).unwrap();
            let err = write_atomic(&path, b"x").unwrap_err();
            assert!(matches!(err, OutputError::Io { .. }), "{err}");
            assert_eq!(err.kind(), ErrorKind::Run);
            assert!(fs::symlink_metadata(&path).unwrap().file_type().is_socket());
            assert_eq!(entries(&dir), ["sock"]);
            fs::remove_dir_all(&dir).unwrap();
        }

        #[cfg(target_os = "linux")]
        #[test]
        fn devices_and_standard_output_are_written_directly() {
            // Looked at only: deciding how to write reads the file system, nothing more.
            assert_eq!(
                plan(Path::new("/dev/null")).unwrap(),
                Plan::Direct { append: false }
            );
            // /dev/stdout -> /proc/self/fd/1: an open descriptor, whatever it is (a pipe,
            // a terminal, or a file that is appended to).
            if Path::new("/dev/stdout").exists() {
                assert!(matches!(
                    plan(Path::new("/dev/stdout")).unwrap(),
                    Plan::Direct { .. }
                ));
            }
        }
    }
}
