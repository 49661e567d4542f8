//! User validation rules: pure functions, no IO.
//!
//! Usernames: 3 to 50 characters, letters and digits of any script plus `_`, `.` and `-`.
//! Emails: at most 255 characters, `local@domain` with a dotted domain and no spaces or
//! control characters. These are the rules frontend-api applies (through this service) before
//! storing a user; the database re-checks the essentials with constraints.

/// One problem with one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn err(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

pub fn check_username(username: &str) -> Option<FieldError> {
    let n = username.chars().count();
    if !(3..=50).contains(&n) {
        return Some(err(
            "username",
            format!("must be 3 to 50 characters long (got {n})"),
        ));
    }
    if let Some(c) = username
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Some(err(
            "username",
            format!("may contain only letters, digits, '_', '.' and '-' (found {c:?})"),
        ));
    }
    None
}

pub fn check_email(email: &str) -> Option<FieldError> {
    let n = email.chars().count();
    if n > 255 {
        return Some(err(
            "email",
            format!("must be at most 255 characters long (got {n})"),
        ));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some(err(
            "email",
            "must not contain spaces or control characters",
        ));
    }
    let Some((local, domain)) = email.split_once('@') else {
        return Some(err(
            "email",
            "must look like name@example.com (no '@' found)",
        ));
    };
    if local.is_empty() || local.chars().count() > 64 {
        return Some(err(
            "email",
            "the part before '@' must be 1 to 64 characters long",
        ));
    }
    if domain.contains('@') {
        return Some(err("email", "must contain exactly one '@'"));
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Some(err(
            "email",
            "the part after '@' must be a domain like example.com",
        ));
    }
    None
}

/// All problems with a user, in field order; empty when the user is valid.
pub fn check_user(username: &str, email: &str) -> Vec<FieldError> {
    check_username(username)
        .into_iter()
        .chain(check_email(email))
        .collect()
}

/// The username and email of a `POST /validate/user` body, or every problem with its shape
/// (not a JSON object, a field missing, not a string, or unknown).
pub fn user_fields(body: &[u8]) -> Result<(String, String), Vec<FieldError>> {
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).map_err(|_| {
            vec![err(
                "body",
                "must be a JSON object like {\"username\":\"...\",\"email\":\"...\"}",
            )]
        })?;
    let mut problems: Vec<FieldError> = obj
        .keys()
        .filter(|k| !matches!(k.as_str(), "username" | "email"))
        .map(|k| {
            let shown: String = k.chars().take(64).collect();
            err("body", format!("unknown field {shown:?}"))
        })
        .collect();
    let mut field = |name: &'static str| match obj.get(name) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(err(name, "must be a string"));
            None
        }
        None => {
            problems.push(err(name, "is required"));
            None
        }
    };
    let (username, email) = (field("username"), field("email"));
    match (username, email) {
        (Some(u), Some(e)) if problems.is_empty() => Ok((u, e)),
        _ => Err(problems),
    }
}

/// An order amount in cents, or why it is not acceptable: positive, at most 2 decimals, and
/// within `numeric(12,2)` (below 10,000,000,000).
pub fn check_amount(amount: f64) -> Result<i64, String> {
    if !amount.is_finite() {
        return Err("amount must be a finite number".into());
    }
    if amount <= 0.0 {
        return Err(format!("amount must be greater than 0 (got {amount})"));
    }
    if amount >= 1e10 {
        return Err(format!(
            "amount must be less than 10000000000 (got {amount})"
        ));
    }
    let cents = (amount * 100.0).round();
    // Tolerance: the representation error of f64 at this magnitude, not more.
    let tolerance = (cents.abs() * 4.0 * f64::EPSILON).max(1e-6);
    if cents < 1.0 || (amount * 100.0 - cents).abs() > tolerance {
        return Err(format!(
            "amount must have at most 2 decimal places (got {amount})"
        ));
    }
    Ok(cents as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(check_username("testuser123"), None);
        assert_eq!(check_username("zoë.ünïcode-名前"), None);
        assert!(check_username("ab").is_some());
        assert!(check_username(&"a".repeat(51)).is_some());
        assert!(
            check_username(&"é".repeat(50)).is_none(),
            "length counts characters"
        );
        assert!(check_username("robert'); DROP TABLE users;--").is_some());
        assert!(check_username("has space").is_some());
        assert!(check_username("nul\0byte").is_some());
    }

    #[test]
    fn emails() {
        assert_eq!(check_email("test@example.com"), None);
        for bad in [
            "",
            "noat",
            "@x.com",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@b..com",
            "a@.com",
        ] {
            assert!(check_email(bad).is_some(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(check_email(&long).is_some());
    }

    #[test]
    fn user_bodies_of_the_wrong_shape_list_every_problem() {
        let fields = |b: &str| -> Vec<&'static str> {
            user_fields(b.as_bytes())
                .unwrap_err()
                .into_iter()
                .map(|p| p.field)
                .collect()
        };
        assert_eq!(fields("{"), ["body"]);
        assert_eq!(fields("[]"), ["body"]);
        assert_eq!(fields(r#"{"username":5}"#), ["username", "email"]);
        assert_eq!(
            fields(r#"{"username":"a","email":"b","is_admin":true}"#),
            ["body"]
        );
        assert_eq!(
            user_fields(br#"{"username":"a","email":"b"}"#).unwrap(),
            ("a".to_string(), "b".to_string())
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(check_amount(99.99), Ok(9999));
        assert_eq!(check_amount(0.01), Ok(1));
        assert_eq!(check_amount(9_999_999_999.99), Ok(999_999_999_999));
        for bad in [0.0, -1.0, 1e10, 1e300, f64::NAN, 0.001, 10.555] {
            assert!(check_amount(bad).is_err(), "{bad} should be rejected");
        }
    }
}
