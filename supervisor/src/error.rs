//! The supervisor's errors, and their one mapping to gRPC statuses.

/// What an admin or registry call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SupervisorError {
    /// No plugin of that folder name or identifier.
    #[error("no plugin named `{0}`")]
    UnknownPlugin(String),
    /// Register with a token that is wrong, used, or from an older spawn.
    #[error("invalid or already used registration token")]
    BadToken,
    /// Register with a protocol version the supervisor does not speak.
    #[error(
        "protocol version {requested} is not supported: this supervisor speaks version {supported}"
    )]
    ProtocolVersion {
        /// What the plugin sent.
        requested: u32,
        /// What the supervisor speaks.
        supported: u32,
    },
    /// Register with metadata that cannot be served.
    #[error("invalid plugin metadata: {0}")]
    InvalidMetadata(String),
    /// Register with an address the supervisor cannot reach.
    #[error("invalid plugin address `{0}`: expected host:port")]
    InvalidAddress(String),
    /// Another plugin already serves this identifier.
    #[error("identifier `{identifier}` is already served by plugin `{holder}`")]
    DuplicateIdentifier {
        /// The identifier.
        identifier: String,
        /// The plugin folder that serves it.
        holder: String,
    },
    /// The plugin's manifest cannot be used, so it cannot be started.
    #[error("cannot start plugin `{plugin}`: {reason}")]
    NotStartable {
        /// The plugin folder.
        plugin: String,
        /// The manifest error.
        reason: String,
    },
    /// The supervisor is shutting down.
    #[error("the supervisor is shutting down")]
    ShuttingDown,
}

impl From<SupervisorError> for tonic::Status {
    fn from(error: SupervisorError) -> Self {
        let message = error.to_string();
        match error {
            SupervisorError::UnknownPlugin(_) => Self::not_found(message),
            SupervisorError::BadToken => Self::permission_denied(message),
            SupervisorError::ProtocolVersion { .. } | SupervisorError::NotStartable { .. } => {
                Self::failed_precondition(message)
            }
            SupervisorError::InvalidMetadata(_) | SupervisorError::InvalidAddress(_) => {
                Self::invalid_argument(message)
            }
            SupervisorError::DuplicateIdentifier { .. } => Self::already_exists(message),
            SupervisorError::ShuttingDown => Self::unavailable(message),
        }
    }
}
