//! Free loopback ports for the servers a test starts.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// Ports this test process has handed out already.
static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released) and that this
/// process has not handed out before: the kernel may offer a just-released port again, so
/// `(free_port(), free_port())` could otherwise name the same port twice.
pub fn free_port() -> u16 {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if given.insert(port) {
            return port;
        }
    }
}
