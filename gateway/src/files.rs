//! Where output files and uploads live: a trait, so an object store can follow,
//! and the local folder that is the default. Files are written and read in
//! chunks; none is ever held whole in memory.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::{io::AsyncRead, sync::mpsc, task::JoinHandle};

/// A file being written; nothing is visible under its key until `finish`.
#[async_trait]
pub trait FileSink: Send {
    /// Appends bytes.
    async fn write(&mut self, bytes: Bytes) -> io::Result<()>;
    /// Makes the file visible, durably; returns its size.
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

/// Files up to this size are kept in memory until `finish`, then written,
/// synced and renamed in one blocking call; larger ones stream to a writer
/// thread as they come.
const SMALL_FILE: usize = 256 * 1024;
/// Chunks in flight to a writer thread (each at most a 1 MiB event).
const WRITER_BACKLOG: usize = 4;

/// A local file being written: first in memory, then (past [`SMALL_FILE`])
/// through a blocking writer thread, so no file call runs on the async runtime
/// and no chunk is copied.
struct LocalSink {
    partial: PathBuf,
    done: PathBuf,
    small: Vec<u8>,
    writer: Option<Writer>,
    size: u64,
}

/// The writer thread of a large file. Dropping `chunks` without sending
/// [`Chunk::Finish`] (an abort, a cancelled task) removes the partial file.
struct Writer {
    chunks: mpsc::Sender<Chunk>,
    thread: JoinHandle<io::Result<()>>,
}

enum Chunk {
    Bytes(Bytes),
    Finish,
}

impl Writer {
    fn start(partial: PathBuf, done: PathBuf, first: Vec<u8>) -> Self {
        let (chunks, mut received) = mpsc::channel(WRITER_BACKLOG);
        let thread = tokio::task::spawn_blocking(move || {
            let written = (|| {
                let mut file = std::fs::File::create(&partial)?;
                file.write_all(&first)?;
                while let Some(chunk) = received.blocking_recv() {
                    match chunk {
                        Chunk::Bytes(bytes) => file.write_all(&bytes)?,
                        Chunk::Finish => {
                            file.sync_data()?;
                            std::fs::rename(&partial, &done)?;
                            return Ok(true);
                        }
                    }
                }
                Ok(false)
            })();
            if !matches!(written, Ok(true)) {
                let _ = std::fs::remove_file(&partial);
            }
            written.and_then(|finished| {
                if finished {
                    Ok(())
                } else {
                    Err(io::Error::new(io::ErrorKind::Interrupted, "file aborted"))
                }
            })
        });
        Self { chunks, thread }
    }

    /// The thread's error, once it stopped taking chunks.
    async fn failure(self) -> io::Error {
        drop(self.chunks);
        match self.thread.await {
            Ok(Err(error)) => error,
            Ok(Ok(())) => io::Error::other("the file writer stopped"),
            Err(joined) => io::Error::other(joined),
        }
    }
}

#[async_trait]
impl FileSink for LocalSink {
    async fn write(&mut self, bytes: Bytes) -> io::Result<()> {
        self.size += bytes.len() as u64;
        if let Some(writer) = &self.writer {
            if writer.chunks.send(Chunk::Bytes(bytes)).await.is_err() {
                let writer = self
                    .writer
                    .take()
                    .ok_or_else(|| io::Error::other("no writer"))?;
                return Err(writer.failure().await);
            }
            return Ok(());
        }
        if self.small.len() + bytes.len() <= SMALL_FILE {
            self.small.extend_from_slice(&bytes);
            return Ok(());
        }
        let mut first = std::mem::take(&mut self.small);
        first.extend_from_slice(&bytes);
        self.writer = Some(Writer::start(
            self.partial.clone(),
            self.done.clone(),
            first,
        ));
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> io::Result<u64> {
        let size = self.size;
        if let Some(writer) = self.writer.take() {
            if writer.chunks.send(Chunk::Finish).await.is_err() {
                return Err(writer.failure().await);
            }
            return match writer.thread.await {
                Ok(result) => result.map(|()| size),
                Err(joined) => Err(io::Error::other(joined)),
            };
        }
        let (partial, done, bytes) = (
            std::mem::take(&mut self.partial),
            std::mem::take(&mut self.done),
            std::mem::take(&mut self.small),
        );
        let written = tokio::task::spawn_blocking(move || {
            let result = (|| {
                let mut file = std::fs::File::create(&partial)?;
                file.write_all(&bytes)?;
                file.sync_data()?;
                std::fs::rename(&partial, &done)
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&partial);
            }
            result
        })
        .await;
        match written {
            Ok(result) => result.map(|()| size),
            Err(joined) => Err(io::Error::other(joined)),
        }
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(writer) = self.writer.take() {
            drop(writer.chunks);
            let _ = writer.thread.await;
        }
    }
}

#[async_trait]
impl FileStore for LocalFileStore {
    async fn create(&self, key: &str) -> io::Result<Box<dyn FileSink>> {
        let done = self.path(key)?;
        let partial = done.with_extension("partial");
        Ok(Box::new(LocalSink {
            partial,
            done,
            small: Vec::new(),
            writer: None,
            size: 0,
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
        sink.write(Bytes::from_static(b"hello "))
            .await
            .expect("write");
        assert!(store.open("abc").await.is_err());
        sink.write(Bytes::from_static(b"world"))
            .await
            .expect("write");
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

    async fn read(store: &LocalFileStore, key: &str) -> Vec<u8> {
        let mut bytes = Vec::new();
        store
            .open(key)
            .await
            .expect("open")
            .read_to_end(&mut bytes)
            .await
            .expect("read");
        bytes
    }

    #[tokio::test]
    async fn a_large_file_streams_through_its_writer_and_an_aborted_one_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalFileStore::new(dir.path()).await.expect("store");
        let chunk = Bytes::from(vec![7u8; 200 * 1024]);
        let mut sink = store.create("big").await.expect("create");
        for _ in 0..5 {
            sink.write(chunk.clone()).await.expect("write");
        }
        assert!(store.open("big").await.is_err(), "visible before finish");
        assert_eq!(sink.finish().await.expect("finish"), 5 * 200 * 1024);
        let bytes = read(&store, "big").await;
        assert_eq!(bytes.len(), 5 * 200 * 1024);
        assert!(bytes.iter().all(|&byte| byte == 7));

        let mut aborted = store.create("gone").await.expect("create");
        for _ in 0..3 {
            aborted.write(chunk.clone()).await.expect("write");
        }
        aborted.abort().await;
        let mut dropped = store.create("dropped").await.expect("create");
        for _ in 0..3 {
            dropped.write(chunk.clone()).await.expect("write");
        }
        drop(dropped);
        // The dropped sink's writer removes its partial file when it sees the
        // channel closed; wait for that, bounded.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .expect("list")
                .map(|entry| {
                    entry
                        .expect("entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            names.sort();
            if names == ["big"] {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "left behind: {names:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}
