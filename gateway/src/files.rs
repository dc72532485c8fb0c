//! Where output files and uploads live: a trait, so an object store can follow,
//! and the local folder that is the default. Files are written and read in
//! chunks; none is ever held whole in memory.

use std::{
    io,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWriteExt};

/// A file being written; nothing is visible under its key until `finish`.
#[async_trait]
pub trait FileSink: Send {
    /// Appends bytes.
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Makes the file visible; returns its size.
    async fn finish(self: Box<Self>) -> io::Result<u64>;
    /// Throws the partial file away.
    async fn abort(self: Box<Self>);
}

/// A file store.
#[async_trait]
pub trait FileStore: Send + Sync + std::fmt::Debug {
    /// Starts writing a new file under `key`.
    async fn create(&self, key: &str) -> io::Result<Box<dyn FileSink>>;
    /// Opens the file under `key` for reading.
    async fn open(&self, key: &str) -> io::Result<Box<dyn AsyncRead + Send + Unpin>>;
    /// Removes the file under `key`; a missing file is not an error.
    async fn delete(&self, key: &str) -> io::Result<()>;
}

/// Files in a local folder, one file per key.
#[derive(Debug)]
pub struct LocalFileStore {
    root: PathBuf,
}

impl LocalFileStore {
    /// A store in `root` (created if missing).
    pub async fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        tokio::fs::create_dir_all(&root).await?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> io::Result<PathBuf> {
        let valid = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid file key `{key}`"),
            ));
        }
        Ok(self.root.join(key))
    }
}

struct LocalSink {
    file: tokio::io::BufWriter<tokio::fs::File>,
    partial: PathBuf,
    done: PathBuf,
    size: u64,
    finished: bool,
}

impl Drop for LocalSink {
    /// A sink dropped unfinished (its writer was cancelled) leaves no partial file.
    fn drop(&mut self) {
        if !self.finished {
            let partial = std::mem::take(&mut self.partial);
            tokio::spawn(async move {
                let _ = tokio::fs::remove_file(partial).await;
            });
        }
    }
}

#[async_trait]
impl FileSink for LocalSink {
    async fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes).await?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> io::Result<u64> {
        self.file.flush().await?;
        self.file.get_mut().sync_data().await?;
        tokio::fs::rename(&self.partial, &self.done).await?;
        self.finished = true;
        Ok(self.size)
    }

    async fn abort(mut self: Box<Self>) {
        self.finished = true;
        let _ = tokio::fs::remove_file(&self.partial).await;
    }
}

#[async_trait]
impl FileStore for LocalFileStore {
    async fn create(&self, key: &str) -> io::Result<Box<dyn FileSink>> {
        let done = self.path(key)?;
        let partial = done.with_extension("partial");
        let file = tokio::fs::File::create(&partial).await?;
        Ok(Box::new(LocalSink {
            file: tokio::io::BufWriter::with_capacity(256 * 1024, file),
            partial,
            done,
            size: 0,
            finished: false,
        }))
    }

    async fn open(&self, key: &str) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        let file = tokio::fs::File::open(self.path(key)?).await?;
        Ok(Box::new(file))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }
}

/// The folder of a local store under a data directory.
pub fn local_root(data_dir: &Path) -> PathBuf {
    data_dir.join("files")
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn a_file_is_visible_only_once_finished() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalFileStore::new(dir.path()).await.expect("store");
        let mut sink = store.create("abc").await.expect("create");
        sink.write(b"hello ").await.expect("write");
        assert!(store.open("abc").await.is_err());
        sink.write(b"world").await.expect("write");
        assert_eq!(sink.finish().await.expect("finish"), 11);
        let mut text = String::new();
        store
            .open("abc")
            .await
            .expect("open")
            .read_to_string(&mut text)
            .await
            .expect("read");
        assert_eq!(text, "hello world");
        assert!(store.create("../escape").await.is_err());
    }
}
