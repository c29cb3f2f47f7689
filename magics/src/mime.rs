//! [`MimeBundle`]: the one output type every magic and runtime produces.
//!
//! A bundle maps a MIME type (`text/plain`, `text/html`, `image/svg+xml`, …) to its data, exactly
//! like Jupyter's `data` dictionary, but without any Jupyter types so this crate stays transport-free.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Ordered map MIME type → data (a JSON string for text types, any JSON for `application/json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MimeBundle {
    /// MIME type → data.
    pub data: BTreeMap<String, Value>,
    /// Per-MIME metadata (e.g. image sizes); usually empty.
    #[serde(default)]
    pub metadata: BTreeMap<String, Value>,
}

impl MimeBundle {
    /// A bundle with only `text/plain`.
    pub fn plain(text: impl Into<String>) -> Self {
        Self::new().with("text/plain", text.into())
    }

    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one MIME type.
    pub fn with(mut self, mime: &str, data: impl Into<Value>) -> Self {
        self.data.insert(mime.to_string(), data.into());
        self
    }

    /// The text of a MIME type if present and a string.
    pub fn text(&self, mime: &str) -> Option<&str> {
        self.data.get(mime).and_then(Value::as_str)
    }

    /// True when the bundle holds nothing.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}
