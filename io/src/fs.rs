//! The file system, kept off the core: the one place the storage and shard crates
//! touch `std::fs`, and the one place that decides how a file-system call waits.
//!
//! A core's executor thread never blocks in the kernel: an `fsync` or an `unlink`
//! there stalls every connection, append and timer of the core. So every call here
//! is async, and runs away from the reactor:
//!
//! - removing and renaming a file: glommio's own operations (`glommio::io::remove`,
//!   `glommio::io::rename`), which glommio runs on the executor's blocking thread;
//! - everything else: the executor's blocking thread, through `spawn_blocking`.
//!   That includes directory syncs: glommio's `Directory::sync` is an `fdatasync`,
//!   which ext4 may answer without committing a directory entry that left the
//!   directory's size alone; the renames made durable here need the entry, so a
//!   directory gets an `fsync`, as before.
//!
//! A call that is several steps (a durable write: temporary file, write, `fsync`,
//! rename, directory `fsync`) is one trip to the blocking thread, not one per step.
//! Segment data does not come here: the journal and the ledger write their
//! segments with O_DIRECT `DmaFile` I/O on the core's ring.
//!
//! [`blocking`] has the same calls as plain functions, for code that runs before a
//! core serves or on no executor at all. They must never be called from a serving
//! core.
//!
//! The async functions must be called from inside a glommio executor. Every error
//! names the call and the path ([`FsError`]); the log turns it into a
//! `LogError`, which tells a full device apart.

pub mod blocking;

pub use crate::error::FsError;
/// The file type [`blocking::open_append`] opens and [`append`] writes through.
pub use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

type Result<T> = std::result::Result<T, FsError>;

/// Runs `f` on the executor's blocking thread and waits for it without blocking
/// the core.
async fn unblock<T, F>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    glommio::executor().spawn_blocking(f).await
}

/// Replaces `path` with `bytes`, durably: see [`blocking::write_durable`].
pub async fn write_durable(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let path = path.to_path_buf();
    unblock(move || blocking::write_durable(&path, &bytes)).await
}

/// Writes `bytes` to `path` with no sync: see [`blocking::write`].
pub async fn write(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let path = path.to_path_buf();
    unblock(move || blocking::write(&path, &bytes)).await
}

/// Makes a directory's entries durable (`fsync` of the directory).
pub async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    unblock(move || blocking::sync_dir(&dir)).await
}

/// Makes an open file's data and metadata durable (`fsync`).
pub async fn sync_file(file: Arc<File>, path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    unblock(move || blocking::sync_file(&file, &path)).await
}

/// Creates `dir` and every missing parent.
pub async fn create_dir_all(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    unblock(move || blocking::create_dir_all(&dir)).await
}

/// The absolute path of `path`, every link resolved.
pub async fn canonicalize(path: &Path) -> Result<PathBuf> {
    let path = path.to_path_buf();
    unblock(move || blocking::canonicalize(&path)).await
}

/// The paths of the entries of `dir`, in the order the directory lists them.
pub async fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = dir.to_path_buf();
    unblock(move || blocking::read_dir(&dir)).await
}

/// Whether something is at `path` (false when it cannot be told).
pub async fn exists(path: &Path) -> bool {
    let path = path.to_path_buf();
    unblock(move || blocking::exists(&path)).await
}

/// Whether `path` is a directory (false when it cannot be told).
pub async fn is_dir(path: &Path) -> bool {
    let path = path.to_path_buf();
    unblock(move || blocking::is_dir(&path)).await
}

/// Whether `path` is a regular file (false when it cannot be told).
pub async fn is_file(path: &Path) -> bool {
    let path = path.to_path_buf();
    unblock(move || blocking::is_file(&path)).await
}

/// Reads a whole (small) file.
pub async fn read(path: &Path) -> Result<Vec<u8>> {
    let path = path.to_path_buf();
    unblock(move || blocking::read(&path)).await
}

/// Reads a whole (small) text file.
pub async fn read_to_string(path: &Path) -> Result<String> {
    let path = path.to_path_buf();
    unblock(move || blocking::read_to_string(&path)).await
}

/// Removes a file (glommio's own operation).
pub async fn remove_file(path: &Path) -> Result<()> {
    glommio::io::remove(path)
        .await
        .map_err(|e| FsError::new("removing", path, e))
}

/// Removes a directory and everything in it.
pub async fn remove_dir_all(path: &Path) -> Result<()> {
    let path = path.to_path_buf();
    unblock(move || blocking::remove_dir_all(&path)).await
}

/// Renames `from` to `to` (glommio's own operation).
pub async fn rename(from: &Path, to: &Path) -> Result<()> {
    glommio::io::rename(from, to)
        .await
        .map_err(|e| FsError::new("renaming", from, e))
}

/// Writes `bytes` to `file` (opened for appending) in one `write_all`, syncs them,
/// and returns the file's length after it: see [`blocking::append`].
pub async fn append(
    file: Arc<File>,
    path: &Path,
    bytes: impl AsRef<[u8]> + Send + 'static,
) -> Result<u64> {
    let path = path.to_path_buf();
    unblock(move || blocking::append(&file, &path, bytes.as_ref())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_executor(f: impl std::future::Future<Output = ()> + 'static) {
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(f);
    }

    #[test]
    fn blocking_calls_run_on_another_thread_than_the_core() {
        on_executor(async {
            let core = std::thread::current().id();
            let ran_on = unblock(|| std::thread::current().id()).await;
            assert_ne!(ran_on, core);
        });
    }

    #[test]
    fn a_durable_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topics.json");
        on_executor(async move {
            write_durable(&path, b"old".to_vec()).await.unwrap();
            write_durable(&path, b"new".to_vec()).await.unwrap();
            assert_eq!(read(&path).await.unwrap(), b"new");
            assert!(!exists(&blocking::tmp_path(&path)).await);
            let listed = read_dir(path.parent().unwrap()).await.unwrap();
            assert_eq!(listed, vec![path.clone()]);
        });
    }

    #[test]
    fn files_and_directories_are_made_renamed_synced_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        on_executor(async move {
            let sub = root.join("a/b");
            create_dir_all(&sub).await.unwrap();
            assert!(is_dir(&sub).await);
            let f = sub.join("f");
            write(&f, b"x".to_vec()).await.unwrap();
            assert!(is_file(&f).await);
            let g = sub.join("g");
            rename(&f, &g).await.unwrap();
            sync_dir(&sub).await.unwrap();
            assert!(!exists(&f).await && exists(&g).await);
            let file = Arc::new(blocking::open_append(&g).unwrap());
            assert_eq!(append(file.clone(), &g, b"yz".to_vec()).await.unwrap(), 3);
            sync_file(file, &g).await.unwrap();
            assert_eq!(read_to_string(&g).await.unwrap(), "xyz");
            assert_eq!(
                canonicalize(&g).await.unwrap(),
                blocking::canonicalize(&g).unwrap()
            );
            remove_file(&g).await.unwrap();
            assert!(!exists(&g).await);
            remove_dir_all(&root.join("a")).await.unwrap();
            assert!(!exists(&root.join("a")).await);
        });
    }

    #[test]
    fn errors_name_the_call_and_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        on_executor(async move {
            let e = remove_file(&missing).await.unwrap_err();
            assert!(e.is_not_found(), "{e}");
            let text = e.to_string();
            assert!(
                text.starts_with("removing ") && text.contains("missing"),
                "{text}"
            );
            let e = read(&missing).await.unwrap_err();
            assert!(e.to_string().starts_with("reading "), "{e}");
            let e = sync_dir(&missing).await.unwrap_err();
            assert!(e.to_string().starts_with("opening directory "), "{e}");
        });
    }
}
