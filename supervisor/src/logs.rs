//! Each plugin's captured stdout and stderr: a bounded ring of recent lines and a
//! broadcast for followers. Lines also go to `tracing`, inside the plugin's span.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    sync::broadcast,
};
use tracing::Instrument;

/// Longest line kept; the rest of a longer line is cut and marked.
const MAX_LINE_BYTES: usize = 16 * 1024;
/// How far a follower may fall behind before it is told it lost lines.
const FOLLOWER_BACKLOG: usize = 1024;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// The plugin's stdout.
    Stdout,
    /// The plugin's stderr.
    Stderr,
    /// A note from the supervisor (e.g. lines a follower missed).
    Supervisor,
}

impl LogStream {
    /// `stdout`, `stderr` or `supervisor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Supervisor => "supervisor",
        }
    }
}

/// One captured line.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Where it came from.
    pub stream: LogStream,
    /// The text, without its line end, lossily decoded as UTF-8.
    pub text: Arc<str>,
    /// When the supervisor read it.
    pub at: SystemTime,
    /// The process that wrote it.
    pub pid: u32,
}

/// The recent lines of one plugin, shared by its readers and the logs stream.
#[derive(Debug)]
pub(crate) struct LogBuffer {
    lines: Mutex<VecDeque<LogLine>>,
    capacity: usize,
    live: broadcast::Sender<LogLine>,
}

impl LogBuffer {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            live: broadcast::channel(FOLLOWER_BACKLOG).0,
        }
    }

    pub(crate) fn push(&self, line: LogLine) {
        let mut lines = self
            .lines
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(line.clone());
        // Sent under the lock so a new follower sees each line exactly once.
        let _no_followers_is_fine = self.live.send(line);
    }

    /// The last `tail` lines and a receiver for the lines after them.
    pub(crate) fn snapshot_and_follow(
        &self,
        tail: usize,
    ) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let lines = self
            .lines
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let skip = lines.len().saturating_sub(tail);
        (
            lines.iter().skip(skip).cloned().collect(),
            self.live.subscribe(),
        )
    }
}

/// Reads `output` line by line into `buffer` and `tracing` until it closes.
pub(crate) fn capture(
    output: impl AsyncRead + Unpin + Send + 'static,
    stream: LogStream,
    pid: u32,
    buffer: Arc<LogBuffer>,
    span: tracing::Span,
) {
    let task = async move {
        let mut reader = BufReader::new(output);
        let mut line = Vec::with_capacity(256);
        loop {
            match read_bounded_line(&mut reader, &mut line).await {
                Ok(0) => break,
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "plugin output closed");
                    break;
                }
            }
            let text: Arc<str> = String::from_utf8_lossy(&line).into();
            match stream {
                LogStream::Stderr => {
                    tracing::warn!(target: "corral::plugin", stream = "stderr", "{text}")
                }
                _ => tracing::info!(target: "corral::plugin", stream = "stdout", "{text}"),
            }
            buffer.push(LogLine {
                stream,
                text,
                at: SystemTime::now(),
                pid,
            });
        }
    };
    tokio::spawn(task.instrument(span));
}

/// Reads one line into `line` (without its end), keeping at most
/// [`MAX_LINE_BYTES`] and discarding the rest of a longer line. Returns the bytes
/// consumed; 0 at the end of the output.
async fn read_bounded_line<R: AsyncBufReadExt + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    line.clear();
    let mut consumed = 0;
    let mut truncated = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            break;
        }
        let (chunk, found_end) = match available.iter().position(|byte| *byte == b'\n') {
            Some(end) => (&available[..end], true),
            None => (available, false),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = chunk.len() + usize::from(found_end);
        reader.consume(used);
        consumed += used;
        if found_end {
            break;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if truncated {
        line.extend_from_slice(" [line cut]".as_bytes());
    }
    Ok(consumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn long_lines_are_cut_and_the_next_line_survives() {
        let mut input = vec![b'a'; MAX_LINE_BYTES + 100];
        input.extend_from_slice(b"\nnext\r\n");
        let mut reader = BufReader::with_capacity(1000, input.as_slice());
        let mut line = Vec::new();
        read_bounded_line(&mut reader, &mut line)
            .await
            .expect("read");
        assert_eq!(line.len(), MAX_LINE_BYTES + " [line cut]".len());
        read_bounded_line(&mut reader, &mut line)
            .await
            .expect("read");
        assert_eq!(line, b"next");
        assert_eq!(
            read_bounded_line(&mut reader, &mut line)
                .await
                .expect("read"),
            0
        );
    }

    #[test]
    fn buffer_keeps_the_newest_lines() {
        let buffer = LogBuffer::new(2);
        for text in ["one", "two", "three"] {
            buffer.push(LogLine {
                stream: LogStream::Stdout,
                text: text.into(),
                at: SystemTime::now(),
                pid: 1,
            });
        }
        let (lines, _) = buffer.snapshot_and_follow(10);
        let texts: Vec<_> = lines.iter().map(|line| &*line.text).collect();
        assert_eq!(texts, ["two", "three"]);
    }
}
