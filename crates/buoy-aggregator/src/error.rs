//! The aggregator layer's one error type. `api` turns it into an HTTP response, in one place.

use buoy_wire::ResultKey;

#[derive(Debug, thiserror::Error)]
pub enum AggError {
    #[error("result {0} unexpected")]
    Unexpected(ResultKey),
    #[error("progress update for {0} unexpected")]
    ProgressUnexpected(ResultKey),
    #[error("result {0} already received")]
    Duplicate(ResultKey),
    #[error("result {0} is already being received")]
    InFlight(ResultKey),
    #[error("client certificate for {identities} may not submit for plugin {plugin:?}")]
    WrongIdentity { plugin: String, identities: String },
    #[error("{0}")]
    BadProgress(String),
    #[error("result {key} refused: {reason}")]
    Refused { key: ResultKey, reason: String },
    #[error("result {key} refused: {reason}")]
    TooLarge { key: ResultKey, reason: String },
    #[error("result {key} not received: {reason}")]
    BodyTimeout { key: ResultKey, reason: String },
    /// No room on our disk or in the run's budget (507); the key stays open.
    #[error("result {key} not stored: {reason}")]
    NoSpace { key: ResultKey, reason: String },
    /// No upload slot in time, or a slow body gave its slot up (503); retry shortly.
    #[error("result {key} not received, retry: {reason}")]
    Busy { key: ResultKey, reason: String },
    #[error("error handling result {key}: {reason}")]
    Internal { key: ResultKey, reason: String },
    #[error("the aggregator is shutting down")]
    ShuttingDown,
    #[error("interrupted before every result arrived")]
    Interrupted,
    /// A run that could never complete, refused before it starts.
    #[error("{0}")]
    Config(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl AggError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AggError {
        let context = context.into();
        move |source| AggError::Io { context, source }
    }
}
