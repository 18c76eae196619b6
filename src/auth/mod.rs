//! Authentication: from a request's credential to a stored key.
//!
//! - `credential`: finds the one credential (Bearer header or opt-in `?api_key=`),
//!   refusing several; strips it from the forwarded query.
//! - `resolver`: the [`KeyResolver`], a cache of positive and negative lookups in
//!   front of the [`KeyStore`](crate::store::KeyStore), with single-flight lookups,
//!   stale-while-revalidate and bounded staleness (SPEC §4).
//! - `flights`: the per-hash lock that makes the resolver's lookups single-flight.
//! - `failures`: the per-address limit on failed authentications.
//!
//! The raw token exists only here and in `proxy::pipeline` until it is hashed; nothing
//! in this module logs it.

pub mod credential;
pub mod failures;
mod flights;
pub mod resolver;

pub use failures::AuthFailureLimiter;
pub use resolver::KeyResolver;
