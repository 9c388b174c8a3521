//! Query strings: `k=v&k=v`, percent-decoded (`+` is a space, as HTML forms send it).

/// The pairs of `q` in order, decoded; `Err` names the first malformed pair (a bad `%` escape
/// or a result that is not UTF-8).
pub fn pairs(q: &str) -> Result<Vec<(String, String)>, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match (percent_decode(k), percent_decode(v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!("malformed query parameter {p:?}")),
            }
        })
        .collect()
}

/// `%XX` and `+` (space) decoding; `None` for a bad escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Fuzz entry (the `http_query` target): a query string as a client sends it.
#[doc(hidden)]
pub fn fuzz_http_query(data: &[u8]) {
    if let Ok(q) = std::str::from_utf8(data) {
        let _ = pairs(q);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%e2%82%ac").as_deref(), Some("€"));
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(
            pairs("a=1&&b&c=%41").unwrap(),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "".into()),
                ("c".into(), "A".into())
            ]
        );
        assert!(pairs("a=%zz").is_err());
        fuzz_http_query(b"a=%e2%82&b=%%");
    }
}
