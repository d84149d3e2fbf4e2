//! Files at rest: the data directory holds the SQLite database, the
//! generated key-encryption key, the development API key and the dev
//! mailbox (codes and links), so it is readable by the service's user only.
//! Directories are created 0700 and files 0600 (the mode is given when the
//! file is created, never fixed afterwards); an existing data directory is
//! tightened at start-up.

use std::{
    fs::{File, OpenOptions},
    io,
    path::{Path, PathBuf},
};

/// Mode of directories latchkey creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files latchkey creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents, each new one 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    builder.create(dir)
}

/// The async [`create_private_dir`].
pub async fn create_private_dir_async(dir: &Path) -> io::Result<()> {
    let mut builder = tokio::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    builder.create(dir).await
}

/// Options that create a file 0600 (a file that already exists keeps its
/// mode: [`tighten_data_dir`] deals with those).
pub fn private_file() -> OpenOptions {
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, FILE_MODE);
    options
}

/// Creates or truncates `path` (0600 when created) for writing.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    private_file()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Writes `contents` to `path`, creating it 0600. Atomically: the content
/// goes to a hidden file beside it first, renamed into place once complete,
/// so a reader (someone watching the dev mailbox) never sees half a file.
pub async fn write_private_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let partial = path.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(FILE_MODE);
    let mut file = options.open(&partial).await?;
    file.write_all(contents).await?;
    file.flush().await?;
    drop(file);
    tokio::fs::rename(&partial, path).await
}

/// Creates an empty SQLite database file 0600 when it does not exist yet, so
/// that SQLite (which gives its `-wal`, `-shm` and journal files the
/// database file's mode) never makes a readable one.
pub fn precreate_sqlite_file(path: &Path) -> io::Result<()> {
    match private_file().write(true).create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// One permission change made by [`tighten_data_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tightened {
    pub path: PathBuf,
    pub from: u32,
    pub to: u32,
}

/// The files latchkey creates in the data directory (the default SQLite
/// database, its companions, the generated keys); `mailbox/` holds `.eml`
/// files.
const DATA_FILES: &[&str] = &[
    "latchkey.db",
    "latchkey.db-wal",
    "latchkey.db-shm",
    "latchkey.db-journal",
    "kek",
    "dev-api-key",
];

/// Removes group and other access from an existing data directory, the
/// files latchkey keeps there and its dev mailbox. Only what this process's
/// user owns is changed, and never a shared directory with the sticky bit
/// set (such as `/tmp`); other files in the directory are left alone.
/// Returns what was changed, for the log.
#[cfg(unix)]
pub fn tighten_data_dir(dir: &Path) -> io::Result<Vec<Tightened>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let mut changed = Vec::new();
    let mut tighten = |path: &Path, wanted: u32| -> io::Result<()> {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        // Not through symlinks, not others' files, not shared directories.
        if meta.file_type().is_symlink() || meta.uid() != uid || meta.mode() & 0o1000 != 0 {
            return Ok(());
        }
        let mode = meta.mode() & 0o777;
        let to = mode & wanted;
        if to != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(to))?;
            changed.push(Tightened {
                path: path.to_path_buf(),
                from: mode,
                to,
            });
        }
        Ok(())
    };
    tighten(dir, DIR_MODE)?;
    for name in DATA_FILES {
        tighten(&dir.join(name), FILE_MODE)?;
    }
    let mailbox = dir.join("mailbox");
    tighten(&mailbox, DIR_MODE)?;
    if std::fs::symlink_metadata(&mailbox).is_ok_and(|m| m.is_dir()) {
        for entry in std::fs::read_dir(&mailbox)? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "eml") {
                tighten(&path, FILE_MODE)?;
            }
        }
    }
    Ok(changed)
}

#[cfg(not(unix))]
pub fn tighten_data_dir(_dir: &Path) -> io::Result<Vec<Tightened>> {
    Ok(Vec::new())
}
