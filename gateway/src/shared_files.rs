//! The shared file store: output files and uploads as chunks in the database,
//! so every gateway on it serves every file. A file is readable once complete;
//! the leftovers of writes a crash cut short are swept away (see `sweep`).

use std::io;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::AsyncRead;

use crate::{
    files::{FileSink, FileStore},
    store::{Store, StoreError, now_millis},
};

/// Bytes per stored chunk (and the most a file being written holds in memory).
const CHUNK: usize = 1024 * 1024;

/// Files in the gateway's database.
#[derive(Debug)]
pub struct DatabaseFileStore {
    store: Store,
}

impl DatabaseFileStore {
    /// A file store in `store`'s database.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn io_error(error: StoreError) -> io::Error {
    io::Error::other(error)
}

struct DatabaseSink {
    store: Store,
    key: String,
    buffer: BytesMut,
    /// The next chunk's position.
    position: i64,
    size: u64,
}

impl DatabaseSink {
    async fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = self.buffer.split().to_vec();
        self.store
            .put_chunk(&self.key, self.position, data)
            .await
            .map_err(io_error)?;
        self.position += 1;
        Ok(())
    }
}

#[async_trait]
impl FileSink for DatabaseSink {
    async fn write(&mut self, mut bytes: Bytes) -> io::Result<()> {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = CHUNK - self.buffer.len();
            let part = bytes.split_to(room.min(bytes.len()));
            self.buffer.extend_from_slice(&part);
            if self.buffer.len() == CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> io::Result<u64> {
        self.flush().await?;
        let size = i64::try_from(self.size).unwrap_or(i64::MAX);
        self.store
            .complete_blob(&self.key, size)
            .await
            .map_err(io_error)?;
        Ok(self.size)
    }

    async fn abort(self: Box<Self>) {
        if let Err(error) = self.store.delete_blob(&self.key).await {
            // The sweep takes it later.
            tracing::warn!(%error, key = %self.key, "failed to delete an aborted file");
        }
    }
}

#[async_trait]
impl FileStore for DatabaseFileStore {
    async fn create(&self, key: &str) -> io::Result<Box<dyn FileSink>> {
        self.store.begin_blob(key).await.map_err(io_error)?;
        Ok(Box::new(DatabaseSink {
            store: self.store.clone(),
            key: key.to_owned(),
            buffer: BytesMut::with_capacity(CHUNK),
            position: 0,
            size: 0,
        }))
    }

    async fn open(&self, key: &str) -> io::Result<Box<dyn AsyncRead + Send + Unpin>> {
        if !self.store.blob_exists(key).await.map_err(io_error)? {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no file `{key}`"),
            ));
        }
        // One chunk in memory at a time, read as the client takes the bytes.
        let chunks = futures::stream::unfold(
            Some((self.store.clone(), key.to_owned(), 0i64)),
            |next| async move {
                let (store, key, position) = next?;
                match store.chunk(&key, position).await {
                    Ok(Some(data)) => {
                        Some((Ok(Bytes::from(data)), Some((store, key, position + 1))))
                    }
                    Ok(None) => None,
                    Err(error) => Some((Err(io_error(error)), None)),
                }
            },
        );
        Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(
            chunks,
        ))))
    }

    async fn delete(&self, key: &str) -> io::Result<()> {
        self.store.delete_blob(key).await.map_err(io_error)
    }
}

/// How old an upload no task took, or a stored file no row references, must
/// be before it is swept away: far longer than any write or request takes.
const SWEEP_AGE_MILLIS: i64 = 60 * 60 * 1000;

/// Sweeps the file store every `every` until `shutdown`: uploads no task took
/// (a request that died between the upload and its task), and, in the shared
/// store, files no row references (a write a crash cut short). Every gateway
/// sweeps; a sweep that finds nothing deletes nothing.
pub(crate) async fn sweep(
    store: Store,
    files: std::sync::Arc<dyn FileStore>,
    shared: bool,
    every: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = shutdown.cancelled() => return,
        }
        let cutoff = now_millis() - SWEEP_AGE_MILLIS;
        match store.forget_stale_uploads(cutoff).await {
            Ok(keys) => {
                for key in &keys {
                    if let Err(error) = files.delete(key).await {
                        tracing::warn!(%error, key, "failed to delete a stale upload");
                    }
                }
                if !keys.is_empty() {
                    tracing::info!(files = keys.len(), "swept away uploads no task took");
                }
            }
            Err(error) => tracing::warn!(%error, "failed to sweep stale uploads"),
        }
        if shared {
            match store.collect_blobs(cutoff).await {
                Ok(0) => {}
                Ok(count) => tracing::info!(files = count, "swept away files no row references"),
                Err(error) => tracing::warn!(%error, "failed to sweep the file store"),
            }
        }
    }
}
