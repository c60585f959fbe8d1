//! [`Value`]: the commands the lab's scenarios replicate.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A command of the lab's scenarios.
///
/// The classic lab replicates Go `int`s (small constants such as 101, or random values)
/// and, in its RPC byte-count scenario only, 5000-character random strings. Two commands
/// are the same command when they are equal, as the lab compares them with `==`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    /// An integer command.
    Int(u64),
    /// A text command.
    Text(String),
}

impl Value {
    /// The integer, if this is an [`Int`](Value::Int).
    pub fn as_int(&self) -> Option<u64> {
        match self {
            Value::Int(x) => Some(*x),
            Value::Text(_) => None,
        }
    }
}

impl From<u64> for Value {
    fn from(x: u64) -> Self {
        Value::Int(x)
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Value::Text(text)
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Value::Text(text.to_owned())
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(x) => write!(f, "{x}"),
            // Long random strings would drown a failure message; their start identifies them.
            Value::Text(text) if text.len() > 16 => {
                let head: String = text.chars().take(16).collect();
                write!(f, "{head:?}… ({} chars)", text.chars().count())
            }
            Value::Text(text) => write!(f, "{text:?}"),
        }
    }
}
