//! Reading the small files people point healthpull at (provider files, the config,
//! replay recordings): regular files only, opened without blocking, never more than
//! a limit.
//!
//! Why: a FIFO, a device or a directory in place of such a file would block the
//! process forever or feed it without end. The file type is checked before opening,
//! the file is opened with `O_NONBLOCK` (a FIFO swapped in meanwhile cannot stall the
//! open) and checked again once open; the size is checked from the metadata and again
//! while reading.

use std::fs::{FileType, Metadata, OpenOptions};
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

/// Why a file was not read. Each message reads after the file's name
/// (`x.yaml is a FIFO, not a regular file`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A FIFO, a socket, a device, a directory.
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    /// More bytes than the limit.
    #[error("is larger than {0} bytes, the limit for this kind of file")]
    TooLarge(usize),
    /// The file system said no (permissions, not UTF-8 ...).
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
}

/// The text of the regular file at `path` (links followed), `None` when nothing is
/// there.
pub fn read(path: &Path, limit: usize) -> Result<Option<String>, Error> {
    match std::fs::metadata(path) {
        Ok(meta) => check(&meta, limit)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    check(&meta, limit)?;
    // One buffer of the file's size: nothing is grown and copied while reading. A file
    // this large is a recorded answer (provider and config files are small).
    let len = usize::try_from(meta.len()).unwrap_or(0);
    crate::pages::answer_ahead(len);
    let mut text = String::with_capacity(len);
    file.take(u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() > limit {
        return Err(Error::TooLarge(limit));
    }
    Ok(Some(text))
}

fn check(meta: &Metadata, limit: usize) -> Result<(), Error> {
    if !meta.is_file() {
        return Err(Error::NotRegular(kind(&meta.file_type())));
    }
    if usize::try_from(meta.len()).map_or(true, |len| len > limit) {
        return Err(Error::TooLarge(limit));
    }
    Ok(())
}

fn kind(file_type: &FileType) -> &'static str {
    if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.yaml");
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(read(&file, 5).unwrap().as_deref(), Some("12345"));
        assert!(matches!(read(&file, 4), Err(Error::TooLarge(4))));
        assert!(read(&dir.path().join("missing"), 5).unwrap().is_none());
        let refused = read(dir.path(), 5).unwrap_err();
        assert_eq!(refused.to_string(), "is a directory, not a regular file");
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(matches!(read(&file, 5), Err(Error::Io(_))));
    }
}
