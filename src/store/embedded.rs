//! The embedded store (placeholder).
pub struct EmbeddedStore;
