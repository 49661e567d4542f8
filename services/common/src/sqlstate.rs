//! What a database error was, by its SQLSTATE: shared by the pool's callers ([`crate::db`])
//! and the error shape ([`crate::error`]) without either needing the other.

fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// `cannot execute ... in a read-only transaction` (SQLSTATE 25006): a standby or fenced primary.
pub fn is_read_only(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some("25006")
}

/// The name of the unique constraint a write violated, if that is what happened (SQLSTATE 23505).
pub fn unique_violation(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            Some(db.constraint().unwrap_or_default().to_string())
        }
        _ => None,
    }
}

/// Whether a write violated a foreign key (SQLSTATE 23503).
pub fn is_foreign_key_violation(err: &sqlx::Error) -> bool {
    sqlstate(err).as_deref() == Some("23503")
}
