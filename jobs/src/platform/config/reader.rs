//! Reading variables: every problem is collected, none stops the read.

use std::collections::HashMap;

use base64::Engine as _;
use secrecy::SecretString;
use url::Url;

use super::ConfigProblem;

/// The variables, by name.
pub type Env = HashMap<String, String>;

/// Reads variables and collects problems.
pub(crate) struct Reader<'a> {
    pub(super) env: &'a Env,
    pub(super) problems: Vec<ConfigProblem>,
}

impl<'a> Reader<'a> {
    /// A set, non-blank value.
    pub(super) fn get(&self, var: &str) -> Option<&'a str> {
        self.env
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn problem(
        &mut self,
        variable: &'static str,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.problems.push(ConfigProblem {
            variable,
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    pub(super) fn flag(&mut self, var: &'static str, default: bool) -> bool {
        match self.get(var).map(str::to_ascii_lowercase).as_deref() {
            None => default,
            Some("1" | "true" | "yes" | "on") => true,
            Some("0" | "false" | "no" | "off") => false,
            Some(other) => {
                self.problem(
                    var,
                    format!("`{other}` is not a boolean"),
                    "use true or false",
                );
                default
            }
        }
    }

    pub(super) fn number<T: std::str::FromStr>(
        &mut self,
        var: &'static str,
        default: T,
        fix: &str,
    ) -> T {
        match self.get(var) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                self.problem(var, format!("`{v}` is not a valid number"), fix);
                default
            }),
        }
    }

    pub(super) fn url(&mut self, var: &'static str) -> Option<Url> {
        let raw = self.get(var)?;
        match Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                self.problem(
                    var,
                    format!("`{raw}` is not an http(s) URL"),
                    "use a full URL such as https://example.com",
                );
                None
            }
        }
    }

    pub(super) fn list(&self, var: &str) -> Vec<String> {
        self.get(var)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(super) fn secret(&self, var: &str) -> Option<SecretString> {
        self.get(var).map(|v| SecretString::from(v.to_string()))
    }
}

/// Checks a Svix/Clerk signing secret (`whsec_` + base64) and returns the decoded key bytes.
pub fn decode_svix_secret(raw: &str) -> Result<Vec<u8>, String> {
    let Some(b64) = raw.strip_prefix("whsec_") else {
        return Err("does not start with `whsec_`".into());
    };
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(key) if key.len() >= 16 => Ok(key),
        Ok(_) => Err("the key after `whsec_` is shorter than 16 bytes".into()),
        Err(_) => Err("the part after `whsec_` is not valid base64".into()),
    }
}
