//! The file-system calls of the `fs` module as plain blocking calls.
//!
//! For code that runs before a core serves or on no executor at all: loading the
//! configuration, the rescale at start-up, command-line tools, tests. Never call
//! these from a serving core: an `fsync` here stalls every connection, append and
//! timer of that core for as long as the device takes. On a core, use the async
//! functions of the `fs` module, which run these same calls on the executor's
//! blocking thread.
//!
//! Every error names the call and the path ([`FsError`]).

use crate::error::FsError;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

type Result<T> = std::result::Result<T, FsError>;

/// Replaces `path` with `bytes`, durably: written to `<name>.tmp` beside it,
/// synced, renamed over `path`, and the directory synced. A crash leaves the old
/// file or the new one, never a mix (at worst a stale `<name>.tmp`).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    write_durable_as(path, bytes, None)
}

/// [`write_durable`] for a file only its owner may read or write (mode 0600): one
/// that holds secrets, such as password hashes.
pub fn write_durable_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_durable_as(path, bytes, Some(0o600))
}

fn write_durable_as(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tmp_path(path);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).truncate(true).create(true);
    if let Some(mode) = mode {
        // A stale temporary file would keep its old mode: it goes first, and the new
        // one is made with the mode (never readable by others, not even briefly).
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(FsError::new("removing", &tmp, e))
            }
            _ => {}
        }
        open.create_new(true).mode(mode);
    }
    let mut f = open
        .open(&tmp)
        .map_err(|e| FsError::new("creating", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| FsError::new("writing", &tmp, e))?;
    f.sync_all().map_err(|e| FsError::new("syncing", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| FsError::new("renaming", &tmp, e))?;
    sync_dir(parent_of(path))
}

/// The temporary name [`write_durable`] writes under: `<name>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Writes `bytes` to `path` as it is, with no sync: for files whose loss in a
/// crash costs nothing (a device probe, a marker whose directory is synced after).
pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| FsError::new("writing", path, e))
}

/// Makes a directory's entries (creations, renames, removals) durable: an
/// `fsync` of the directory.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .map_err(|e| FsError::new("opening directory", dir, e))?
        .sync_all()
        .map_err(|e| FsError::new("syncing directory", dir, e))
}

/// Makes an open file's data and metadata durable (`fsync`).
pub fn sync_file(file: &File, path: &Path) -> Result<()> {
    file.sync_all()
        .map_err(|e| FsError::new("syncing", path, e))
}

/// Creates `dir` and every missing parent.
pub fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| FsError::new("creating", dir, e))
}

/// The absolute path of `path`, every link resolved.
pub fn canonicalize(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| FsError::new("resolving", path, e))
}

/// The paths of the entries of `dir`, in the order the directory lists them.
pub fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| FsError::new("listing", dir, e))? {
        out.push(entry.map_err(|e| FsError::new("listing", dir, e))?.path());
    }
    Ok(out)
}

/// Whether something is at `path` (links followed; false when it cannot be told).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// Whether `path` is a directory (links followed; false when it cannot be told).
pub fn is_dir(path: &Path) -> bool {
    path.is_dir()
}

/// Whether `path` is a regular file (links followed; false when it cannot be told).
pub fn is_file(path: &Path) -> bool {
    path.is_file()
}

/// Reads a whole (small) file.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| FsError::new("reading", path, e))
}

/// Reads a whole (small) text file.
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| FsError::new("reading", path, e))
}

/// Removes a file.
pub fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| FsError::new("removing", path, e))
}

/// Removes a directory and everything in it.
pub fn remove_dir_all(path: &Path) -> Result<()> {
    std::fs::remove_dir_all(path).map_err(|e| FsError::new("removing", path, e))
}

/// Renames `from` to `to` (replacing `to` if it is a file or an empty directory).
pub fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| FsError::new("renaming", from, e))
}

/// Opens `path` for appending, creating it when missing.
pub fn open_append(path: &Path) -> Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| FsError::new("opening", path, e))
}

/// The length of an open file.
pub fn file_len(file: &File, path: &Path) -> Result<u64> {
    file.metadata()
        .map(|m| m.len())
        .map_err(|e| FsError::new("reading the length of", path, e))
}

/// Cuts an open file to `len` bytes (or extends it with zeros).
pub fn set_len(file: &File, path: &Path, len: u64) -> Result<()> {
    file.set_len(len)
        .map_err(|e| FsError::new("setting the length of", path, e))
}

/// Writes `bytes` to `file` in one `write_all` (with `O_APPEND`, at its end),
/// makes them durable (`fdatasync`), and returns the file's length after it: a
/// length that survives a power loss, which is what a checkpoint may record.
pub fn append(file: &File, path: &Path, bytes: &[u8]) -> Result<u64> {
    let mut f = file;
    f.write_all(bytes)
        .map_err(|e| FsError::new("writing", path, e))?;
    file.sync_data()
        .map_err(|e| FsError::new("syncing", path, e))?;
    file_len(file, path)
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
