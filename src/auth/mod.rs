//! Authentication: from a request's credential to a stored key.
//!
//! - `resolver`: the [`KeyResolver`], a moka cache of positive and negative lookups in
//!   front of the [`KeyStore`](crate::store::KeyStore), with single-flight lookups,
//!   stale-while-revalidate and bounded staleness (SPEC §4).
//!
//! The raw token exists only inside this module and `proxy::pipeline` until it is
//! hashed; nothing here logs it.

pub mod resolver;

pub use resolver::KeyResolver;
