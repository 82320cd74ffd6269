//! The fleet's log lines on stderr. Text from the market (a rogue's record, message or reason)
//! reaches them, so control characters are escaped (no forged or garbled lines), and a line that
//! cannot be written is dropped rather than stopping the process (`eprintln!` would panic).

use std::io::Write;

/// Writes `line` and a newline on stderr in one write, its control characters escaped.
pub(crate) fn say(line: &str) {
    let mut text = gridbox_service::escape_control(line).into_owned();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// `url` without its user and password (`nats://user:pass@host` -> `nats://***@host`), for logs
/// and errors.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}***{}", &url[..scheme + 3], &url[at..]),
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_not_shown() {
        assert_eq!(redacted_url("nats://alice:secret@market:4222"), "nats://***@market:4222");
        assert_eq!(redacted_url("alice:secret@market:4222"), "***@market:4222");
        assert_eq!(redacted_url("nats://market:4222"), "nats://market:4222");
    }
}
