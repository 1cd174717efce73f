//! A small JSON file in the data directory that every core reads and any core may
//! change (the SASL users, the ACLs): read whole at start, held as one `Arc` value
//! behind a lock, and replaced whole.
//!
//! A change is applied to a copy, written durably (temporary file made 0600,
//! `fsync`, rename, directory `fsync`), and only then made the value the cores
//! read: a change is answered once it survives a crash, a failed write changes
//! nothing, and changes are written one at a time. A change that changes nothing
//! writes nothing.
//!
//! Never: blocks a core (a change runs on the executor's blocking thread; a read
//! takes the lock for an `Arc` clone), or shows a value it has not written.

use crate::error::KafkaError;
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use tidewater_io::fs;

pub struct SharedFile<T> {
    path: PathBuf,
    /// What the file holds, e.g. "a users file", for errors.
    what: &'static str,
    value: RwLock<Arc<T>>,
    /// Held while a change is written: one at a time.
    writing: Mutex<()>,
}

impl<T> SharedFile<T>
where
    T: Clone + PartialEq + Serialize + DeserializeOwned + Default + Send + Sync + 'static,
{
    /// The value in `path` (the default when there is no file). Blocking: for
    /// start-up and the command line, never a serving core.
    pub fn open(path: &Path, what: &'static str) -> Result<SharedFile<T>, KafkaError> {
        let value = match fs::blocking::read_to_string(path) {
            Ok(text) => serde_json::from_str::<T>(&text)
                .map_err(|e| KafkaError::storage(format!("{}: not {what}: {e}", path.display())))?,
            Err(e) if e.is_not_found() => T::default(),
            Err(e) => {
                return Err(KafkaError::storage(format!(
                    "cannot read {}: {}",
                    path.display(),
                    e.source
                )))
            }
        };
        Ok(SharedFile {
            path: path.to_path_buf(),
            what,
            value: RwLock::new(Arc::new(value)),
            writing: Mutex::new(()),
        })
    }

    /// The value now.
    pub fn get(&self) -> Arc<T> {
        match self.value.read() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes the value held in memory only, before anything reads it (a value
    /// made at start, written with the first change).
    pub fn init(&mut self, f: impl FnOnce(&mut T)) {
        let value = match self.value.get_mut() {
            Ok(v) => v,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(Arc::make_mut(value));
    }

    /// Applies `change` to a copy, writes it durably and makes it the value;
    /// `change`'s error (or a failed write) leaves everything as it was. Blocking:
    /// call it through [`SharedFile::change`] on a core.
    pub fn change_blocking<R>(
        &self,
        change: impl FnOnce(&mut T) -> Result<R, KafkaError>,
    ) -> Result<R, KafkaError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let before = self.get();
        let mut value = (*before).clone();
        let out = change(&mut value)?;
        if value == *before {
            return Ok(out);
        }
        let bytes = serde_json::to_vec_pretty(&value)
            .map_err(|e| KafkaError::storage(format!("cannot encode {}: {e}", self.what)))?;
        fs::blocking::write_durable_private(&self.path, &bytes).map_err(|e| {
            KafkaError::storage(format!(
                "cannot write {}: {}",
                self.path.display(),
                e.source
            ))
        })?;
        let fresh = Arc::new(value);
        match self.value.write() {
            Ok(mut v) => *v = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        Ok(out)
    }

    /// [`SharedFile::change_blocking`] on the executor's blocking thread.
    pub async fn change<R: Send + 'static>(
        self: &Arc<Self>,
        change: impl FnOnce(&mut T) -> Result<R, KafkaError> + Send + 'static,
    ) -> Result<R, KafkaError> {
        let file = self.clone();
        glommio::executor()
            .spawn_blocking(move || file.change_blocking(change))
            .await
    }
}
