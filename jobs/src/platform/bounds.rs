//! The bounds every input is held to at the edge. The database holds the same ones as CHECK
//! constraints (migration `20261204000001_bounds_and_money_checks.sql`), so a row can never be
//! written past them by any path; these give the caller a 400 that names the field instead.

use serde_json::Value;

/// The longest span any input may name, in days: a download's expiry, an extension, an age on
/// the command line (ten years). Past it, time arithmetic would leave PostgreSQL's range.
pub const MAX_DAYS: i64 = 3650;

/// [`MAX_DAYS`] in seconds.
pub const MAX_SECONDS: u64 = MAX_DAYS as u64 * 86_400;

/// The most downloads a grant may allow (its limit, or what a reset adds at once).
pub const MAX_DOWNLOADS: i32 = 1_000_000;

/// A metadata object's largest size, as JSON.
pub const METADATA_BYTES: usize = 16 * 1024;

/// A metadata object's deepest nesting.
pub const METADATA_DEPTH: usize = 8;

/// Names and labels.
pub const NAME_CHARS: usize = 200;

/// Descriptions, instructions and other prose.
pub const PROSE_CHARS: usize = 10_000;

/// Short codes and identifiers (phone, time zone, provider ids).
pub const SHORT_CHARS: usize = 100;

/// True when `v` is at most [`METADATA_BYTES`] as JSON and [`METADATA_DEPTH`] deep.
pub fn metadata_fits(v: &Value) -> bool {
    fn depth(v: &Value) -> usize {
        match v {
            Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
            Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    depth(v) <= METADATA_DEPTH && serde_json::to_vec(v).is_ok_and(|b| b.len() <= METADATA_BYTES)
}

/// True for an active ISO 4217 code of money, upper case: not the testing code `XTS`, "no
/// currency" `XXX`, the precious metals (`XAU`…), drawing rights or fund units, which no shop
/// sells in.
pub fn is_currency(code: &str) -> bool {
    const NOT_MONEY: &[&str] = &[
        "XXX", "XTS", "XAU", "XAG", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA",
        "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW",
    ];
    code.len() == 3
        && code.bytes().all(|b| b.is_ascii_uppercase())
        && !NOT_MONEY.contains(&code)
        && iso_currency::Currency::from_code(code).is_some()
}

/// True for a name in the IANA time zone database (`Europe/Berlin`, `UTC`).
pub fn is_timezone(name: &str) -> bool {
    name.len() <= SHORT_CHARS && name.parse::<chrono_tz::Tz>().is_ok()
}

/// An age or a span such as `90s`, `15m`, `2h`, `7d`: positive, at most [`MAX_DAYS`], computed
/// without overflow.
pub fn parse_span(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` is not a span like 90s, 15m, 2h or 7d"))?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: use s, m, h or d")),
    };
    match n.checked_mul(per) {
        Some(secs) if secs <= MAX_SECONDS => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(format!("`{s}` is longer than {MAX_DAYS} days")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spans_are_bounded_and_never_overflow() {
        assert_eq!(parse_span("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_span("7d").unwrap().as_secs(), 7 * 86_400);
        assert_eq!(parse_span("3650d").unwrap().as_secs(), MAX_SECONDS);
        for bad in [
            "3651d",
            "100000000d",
            "18446744073709551615d",
            "99999999999999999999s",
            "",
            "d",
            "-1d",
            "1w",
            "1.5h",
        ] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies_are_active_codes_of_money() {
        for ok in ["USD", "EUR", "JPY", "CHF"] {
            assert!(is_currency(ok), "{ok}");
        }
        for bad in ["XXX", "ZZZ", "XTS", "XAU", "usd", "US", "USDD", ""] {
            assert!(!is_currency(bad), "{bad}");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        for ok in ["UTC", "Europe/Berlin", "America/New_York"] {
            assert!(is_timezone(ok), "{ok}");
        }
        for bad in ["Mars/Olympus", "", "Europe/Berlin/x", "utc+25"] {
            assert!(!is_timezone(bad), "{bad}");
        }
    }

    #[test]
    fn metadata_is_bounded_in_size_and_depth() {
        assert!(metadata_fits(&json!({"a": {"b": [1, 2]}})));
        assert!(!metadata_fits(&json!({"a": "x".repeat(METADATA_BYTES)})));
        let mut deep = json!(1);
        for _ in 0..METADATA_DEPTH {
            deep = json!({ "d": deep });
        }
        assert!(metadata_fits(&deep));
        assert!(!metadata_fits(&json!({ "d": deep })));
    }
}
