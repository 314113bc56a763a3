//! What a provider reported about money, read strictly. A payment records the amount and
//! currency the provider sent, or it is refused: a missing, null, fractional, negative or
//! string amount, or a currency that is not an active ISO 4217 code, is an error that names the
//! field. Nothing here falls back to what the order expected.

use serde_json::Value;

use crate::platform::bounds::is_currency;

/// An amount and currency exactly as the provider reported them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    /// Minor units.
    pub amount_cents: i64,
    /// ISO 4217, upper case.
    pub currency: String,
}

impl std::fmt::Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.amount_cents, self.currency)
    }
}

/// The JSON type of `v`, for an error message.
fn kind(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The field at `pointer` (a JSON pointer such as `/amount_total`), required to be present.
fn field<'a>(obj: &'a Value, pointer: &str) -> Result<&'a Value, String> {
    obj.pointer(pointer)
        .ok_or_else(|| format!("`{}` is missing", name(pointer)))
}

/// `/totals/grand_total/amount` → `totals.grand_total.amount`.
fn name(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// A non-negative integer amount in minor units at `pointer`.
pub fn amount(obj: &Value, pointer: &str) -> Result<i64, String> {
    let v = field(obj, pointer)?;
    match v.as_i64() {
        Some(a) if a >= 0 => Ok(a),
        Some(a) => Err(format!("`{}` is negative ({a})", name(pointer))),
        None => Err(format!(
            "`{}` is {}, not an integer amount in minor units",
            name(pointer),
            kind(v)
        )),
    }
}

/// An active ISO 4217 currency code at `pointer`, returned upper case (Stripe sends lower case).
pub fn currency(obj: &Value, pointer: &str) -> Result<String, String> {
    let v = field(obj, pointer)?;
    let Some(code) = v.as_str() else {
        return Err(format!(
            "`{}` is {}, not a currency code",
            name(pointer),
            kind(v)
        ));
    };
    let upper = code.to_ascii_uppercase();
    if is_currency(&upper) {
        Ok(upper)
    } else {
        Err(format!(
            "`{}` is {:?}, not an active ISO 4217 currency",
            name(pointer),
            code.chars().take(10).collect::<String>()
        ))
    }
}

/// Both, from `amount_at` and `currency_at`.
pub fn money(obj: &Value, amount_at: &str, currency_at: &str) -> Result<Money, String> {
    Ok(Money {
        amount_cents: amount(obj, amount_at)?,
        currency: currency(obj, currency_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_amount_is_an_integer_that_is_present() {
        let ok = json!({"amount_total": 2900, "currency": "usd"});
        assert_eq!(
            money(&ok, "/amount_total", "/currency").unwrap(),
            Money {
                amount_cents: 2900,
                currency: "USD".into()
            }
        );
        for (obj, want) in [
            (json!({"currency": "usd"}), "`amount_total` is missing"),
            (json!({"amount_total": null}), "`amount_total` is null"),
            (json!({"amount_total": "2900"}), "the string \"2900\""),
            (json!({"amount_total": 2900.0}), "the number 2900.0"),
            (json!({"amount_total": 29.5}), "the number 29.5"),
            (json!({"amount_total": -1}), "negative"),
        ] {
            let err = amount(&obj, "/amount_total").unwrap_err();
            assert!(err.contains(want), "{obj}: {err}");
        }
    }

    #[test]
    fn a_currency_is_an_active_iso_code() {
        assert_eq!(currency(&json!({"c": "eur"}), "/c").unwrap(), "EUR");
        assert_eq!(currency(&json!({"c": "JPY"}), "/c").unwrap(), "JPY");
        for bad in [
            json!({}),
            json!({"c": null}),
            json!({"c": 840}),
            json!({"c": "XXX"}),
            json!({"c": "ZZZ"}),
            json!({"c": "us"}),
            json!({"c": "xts"}),
        ] {
            assert!(currency(&bad, "/c").is_err(), "{bad}");
        }
    }

    #[test]
    fn nested_fields_are_named_with_dots() {
        let err = amount(&json!({"totals": {}}), "/totals/grand_total/amount").unwrap_err();
        assert_eq!(err, "`totals.grand_total.amount` is missing");
    }
}
