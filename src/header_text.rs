//! Header values keygate makes on every request (`RateLimit-*` numbers, a new
//! `X-Request-Id`), cut from a buffer the thread shares between values, as hyper does
//! for the heads it parses: no allocation per value, and a clone is a reference count,
//! not a copy. Imports nothing of keygate.

use std::cell::RefCell;

use bytes::BytesMut;
use http::HeaderValue;

/// Size of each block values are cut from.
const BLOCK: usize = 4096;

thread_local! {
    static BUF: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `text` as a header value; `None` if it is not one (a control character).
pub fn value(text: &[u8]) -> Option<HeaderValue> {
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        // A new block once the shared one has no room left.
        if buf.capacity() < text.len() {
            buf.reserve(BLOCK.max(text.len()));
        }
        buf.extend_from_slice(text);
        HeaderValue::from_maybe_shared(buf.split().freeze()).ok()
    })
}

/// `n` as a header value (its decimal text).
pub fn number(n: u64) -> HeaderValue {
    value(itoa::Buffer::new().format(n).as_bytes()).unwrap_or_else(|| HeaderValue::from(n))
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_keep_their_text_across_blocks() {
        for n in [0, 1, 9, 10, 1023, 1024, 86_400, 1_000_000_000, u64::MAX] {
            // Twice: the second from the same shared block.
            for _ in 0..2 {
                assert_eq!(super::number(n).to_str().unwrap(), n.to_string(), "{n}");
            }
        }
        // Many in a row, kept alive together: each keeps its own text across the
        // thread's block refills, whatever their lengths.
        let values: Vec<_> = (0..3_000u64)
            .map(|i| {
                let text = "x".repeat((i % 700) as usize) + &i.to_string();
                let v = super::value(text.as_bytes()).unwrap();
                (text, v)
            })
            .collect();
        for (text, v) in values {
            assert_eq!(v.to_str().unwrap(), text);
        }
        assert!(super::value(b"bad\nvalue").is_none());
        assert_eq!(super::value(b"").unwrap().as_bytes(), b"");
    }
}
