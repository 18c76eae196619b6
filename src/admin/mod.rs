//! Admin API (placeholder until filled in).
