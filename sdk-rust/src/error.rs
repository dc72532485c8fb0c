//! What a plugin's code and the SDK fail with.

/// An error of a task or of serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task failed; the message is appended to its log.
    #[error("{0}")]
    Task(String),
    /// The gateway dropped the call (or its deadline passed).
    #[error("the task was cancelled")]
    Cancelled,
    /// The plugin has no such capability (e.g. no rendered view).
    #[error("not implemented by this plugin")]
    Unimplemented,
    /// The environment lacks what the supervisor passes.
    #[error("{0}")]
    Environment(String),
    /// The gRPC server failed.
    #[error("failed to serve gRPC")]
    Transport(#[from] tonic::transport::Error),
    /// Binding the listener failed.
    #[error("failed to listen")]
    Io(#[from] std::io::Error),
    /// The supervisor refused the registration.
    #[error("the supervisor refused the registration: {0}")]
    Registration(tonic::Status),
}

impl Error {
    /// A task failure with a readable reason.
    pub fn task(message: impl Into<String>) -> Self {
        Self::Task(message.into())
    }
}
