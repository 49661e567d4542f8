//! init-db.sql: idempotent, non-destructive, and its constraints hold.

use test_support::{init_db_sql, TestDb};

/// Everything about the schema that a second run could change.
fn schema_fingerprint(db: &TestDb) -> String {
    db.psql(
        "SELECT string_agg(x, E'\\n' ORDER BY x) FROM (
           SELECT 'col ' || table_name || '.' || column_name || ' ' || data_type || ' ' || coalesce(column_default, '') AS x
             FROM information_schema.columns WHERE table_schema = 'public'
           UNION ALL SELECT 'con ' || conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
             WHERE connamespace = 'public'::regnamespace
           UNION ALL SELECT 'idx ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
           UNION ALL SELECT 'ver ' || version || ' ' || description FROM schema_version
         ) s",
    )
}

#[test]
fn running_it_twice_changes_nothing() {
    let db = TestDb::new(); // init-db.sql already applied once (the template)
    let before = schema_fingerprint(&db);
    assert!(before.contains("idx users_email_key"), "{before}");
    test_support::shared()
        .apply_file(&db.name, &init_db_sql())
        .expect("a second run raises no error");
    assert_eq!(schema_fingerprint(&db), before);
    assert_eq!(db.psql("SELECT count(*) FROM schema_version"), "1");
}

#[test]
fn it_holds_no_destructive_statement() {
    let sql = std::fs::read_to_string(init_db_sql())
        .unwrap()
        .to_uppercase();
    let code: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for statement in code.split(';') {
        let first = statement.split_whitespace().next().unwrap_or("");
        assert!(
            !["DROP", "TRUNCATE", "DELETE", "ALTER", "UPDATE"].contains(&first),
            "init-db.sql has a destructive statement: {statement}"
        );
    }
    assert!(
        code.contains("CREATE TABLE IF NOT EXISTS USERS"),
        "the check sees the statements"
    );
}

#[test]
fn constraints_refuse_bad_rows() {
    let db = TestDb::new();
    let c = test_support::shared();
    db.psql("INSERT INTO users (username, email) VALUES ('alice', 'alice@example.com')");
    for bad in [
        "INSERT INTO users (username, email) VALUES ('alice', 'other@example.com')",
        "INSERT INTO users (username, email) VALUES ('alice2', 'ALICE@example.com')",
        "INSERT INTO orders (user_id, amount) VALUES (999, 1)",
        "INSERT INTO orders (user_id, amount) SELECT id, 0 FROM users",
        "INSERT INTO orders (user_id, amount) SELECT id, 100000000000 FROM users",
        "INSERT INTO orders (user_id, amount, status) SELECT id, 1, 'lost' FROM users",
        "INSERT INTO ingested_data (data_type, payload) VALUES ('', '{}')",
    ] {
        assert!(c.psql(&db.name, bad).is_err(), "accepted: {bad}");
    }
    db.psql("INSERT INTO orders (user_id, amount) SELECT id, 12.345 FROM users");
    assert_eq!(
        db.psql("SELECT amount, status FROM orders"),
        "12.35|pending"
    );
}
