//! Small files written whole and durably now live in `tidewater_io::fs`: the one
//! module that writes a file durably (temporary file, synced, renamed, directory
//! synced) and decides how each file-system call stays off a serving core
//! (`fs::write_durable(..).await` there; `fs::blocking::write_durable` before
//! one serves). This name stays for `kafka::create_topics` until it moves over.

pub use tidewater_io::fs::blocking::write_durable as write_whole;
