//! Small files written whole and durably: `tidewater.meta`, `topics.json`, the
//! `RESCALE` record. Owns nothing but the write order (temporary file, synced,
//! renamed over the target, directory synced), so a crash leaves the old file or
//! the new one, never a mix.

use std::path::Path;

/// Replaces `path` with `bytes`, durably, through `<name>.tmp` beside it.
pub fn write_whole(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(parent_of(path))
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}
