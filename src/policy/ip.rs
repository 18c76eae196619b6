//! The client address (SPEC §2 "IP restrictions") and allow-list checks.
//!
//! The client is the TCP peer (or PROXY-protocol source) unless that address is a
//! trusted proxy; then it is the right-most `X-Forwarded-For` address that is not a
//! trusted proxy. `::ffff:a.b.c.d` is treated as IPv4 everywhere. A malformed
//! `X-Forwarded-For` from a trusted proxy gives no client address, which fails closed
//! for any key with an allow-list.

use std::net::IpAddr;

use http::HeaderMap;
use http::header::HeaderName;
use ipnet::IpNet;
use smallvec::SmallVec;

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// `::ffff:a.b.c.d` → `a.b.c.d`; other addresses unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// `ip` as text (what `Display` gives) in `buf`, without `fmt`'s machinery for IPv4
/// (per request: `X-Forwarded-For` and the access log). 45 bytes hold any address.
pub fn render(ip: IpAddr, buf: &mut [u8; 45]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(_) => {
            use std::io::Write;
            let mut cursor = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(cursor, "{ip}");
            let n = usize::try_from(cursor.position()).unwrap_or(0);
            &buf[..n]
        }
    }
}

pub fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client address, or `None` when a trusted proxy sent a malformed header.
pub fn client_addr(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = canonical(peer);
    if !is_trusted(peer, trusted) {
        return Some(peer);
    }
    // (On the stack for up to eight hops: every request through a load balancer
    // comes this way.)
    let mut hops = SmallVec::<[IpAddr; 8]>::new();
    for line in headers.get_all(&X_FORWARDED_FOR) {
        let line = line.to_str().ok()?;
        for part in line.split(',') {
            let ip: IpAddr = part.trim().parse().ok()?;
            hops.push(canonical(ip));
        }
    }
    // Right to left: the first address no trusted proxy vouches for is the client.
    match hops.iter().rev().find(|ip| !is_trusted(**ip, trusted)) {
        Some(ip) => Some(*ip),
        // Every hop is a trusted proxy: the left-most is as far back as we can see.
        None => Some(hops.first().copied().unwrap_or(peer)),
    }
}

/// Whether `client` is inside one of `allow`.
pub fn allowed(client: IpAddr, allow: &[IpNet]) -> bool {
    let client = canonical(client);
    allow.iter().any(|n| match (n, client) {
        (IpNet::V4(net), IpAddr::V4(c)) => net.contains(&c),
        (IpNet::V6(net), IpAddr::V6(c)) => net.contains(&c),
        // An IPv4-mapped allow entry (::ffff:10.0.0.0/104) still matches IPv4 clients.
        (IpNet::V6(net), IpAddr::V4(c)) => net.contains(&c.to_ipv6_mapped()),
        (IpNet::V4(_), IpAddr::V6(_)) => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn render_is_display() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.9.99.100",
            "255.255.255.255",
            "::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut buf = [0; 45];
            assert_eq!(render(ip, &mut buf), ip.to_string().as_bytes());
        }
    }

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let h = xff(&["1.2.3.4"]);
        let c = client_addr("9.9.9.9".parse().unwrap(), &h, &nets(&["10.0.0.0/8"]));
        assert_eq!(c, Some("9.9.9.9".parse().unwrap()));
    }

    #[test]
    fn rightmost_untrusted_hop_across_lines() {
        let t = nets(&["10.0.0.0/8"]);
        let h = xff(&["6.6.6.6, 1.2.3.4", "10.0.0.2"]);
        let c = client_addr("10.0.0.1".parse().unwrap(), &h, &t);
        assert_eq!(c, Some("1.2.3.4".parse().unwrap()));
    }

    #[test]
    fn malformed_from_trusted_fails_closed() {
        let t = nets(&["10.0.0.0/8"]);
        for bad in ["1.2.3.4, nonsense", "", "1.2.3.4:80"] {
            let h = xff(&[bad]);
            assert_eq!(
                client_addr("10.0.0.1".parse().unwrap(), &h, &t),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn mapped_v4_compares_as_v4() {
        let peer: IpAddr = "::ffff:192.168.1.5".parse().unwrap();
        assert_eq!(canonical(peer), "192.168.1.5".parse::<IpAddr>().unwrap());
        assert!(allowed(peer, &nets(&["192.168.1.0/24"])));
        assert!(!allowed(peer, &nets(&["10.0.0.0/8"])));
        assert!(allowed("::1".parse().unwrap(), &nets(&["::1/128"])));
        assert!(!allowed("127.0.0.1".parse().unwrap(), &nets(&["::1/128"])));
        assert!(allowed(
            "10.1.1.1".parse().unwrap(),
            &nets(&["::ffff:10.0.0.0/104"])
        ));
    }
}
