//! Typed service configuration, read once at startup from the environment.
//!
//! The variable names are the seed's (`DATABASE_HOST`, `REGION`, `BUSINESS_LOGIC_URL`, ...), so
//! existing manifests and shell snippets keep working. Every error names the variable at fault.
//! The password lives in a [`SecretString`] and is never formatted.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;

/// A configuration error; the message names the environment variable and what is expected.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn invalid(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

/// How a service reaches PostgreSQL.
#[derive(Clone, Debug)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub password: SecretString,
    /// Set when `DATABASE_URL` was given; it overrides the individual variables.
    pub url: Option<SecretString>,
    pub pool_max: u32,
    pub pool_min: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
}

impl DbConfig {
    /// Connection options for sqlx. The password never leaves the secret except into these.
    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        let base = match &self.url {
            Some(url)
                if !url.expose_secret().starts_with("postgres://")
                    && !url.expose_secret().starts_with("postgresql://") =>
            {
                return Err(invalid(
                    "DATABASE_URL",
                    "must start with postgres:// (postgres://user:password@host:port/dbname)",
                ))
            }
            Some(url) => PgConnectOptions::from_str(url.expose_secret()).map_err(|_| {
                // The sqlx message may quote the URL, and with it the password: do not pass it on.
                invalid(
                    "DATABASE_URL",
                    "is not a valid postgres:// URL (postgres://user:password@host:port/dbname)",
                )
            })?,
            None => PgConnectOptions::new()
                .host(&self.host)
                .port(self.port)
                .database(&self.name)
                .username(&self.user)
                .password(self.password.expose_secret()),
        };
        let statement_ms = self.statement_timeout.as_millis().to_string();
        Ok(base
            .application_name("drd-service")
            .options([("statement_timeout", statement_ms.as_str())]))
    }

    /// Where the service points, without the password: for `/info` and logs.
    pub fn describe(&self) -> (String, u16, String, String) {
        match self.connect_options() {
            Ok(o) if self.url.is_some() => (
                o.get_host().to_string(),
                o.get_port(),
                o.get_database().unwrap_or_default().to_string(),
                o.get_username().to_string(),
            ),
            _ => (
                self.host.clone(),
                self.port,
                self.name.clone(),
                self.user.clone(),
            ),
        }
    }
}

/// Everything a service reads from its environment.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub listen: SocketAddr,
    pub region: String,
    /// `APP_ROLE` from the region's ConfigMap (`active` / `standby`), informational.
    pub app_role: Option<String>,
    pub database: DbConfig,
    pub business_logic_url: String,
    pub data_ingest_url: String,
    pub upstream_timeout: Duration,
    pub max_body_bytes: usize,
    /// After SIGTERM, how long readiness reports 503 before the listener stops accepting.
    pub shutdown_drain: Duration,
    /// How long in-flight requests may take to finish after the drain.
    pub shutdown_timeout: Duration,
    /// Limits that protect the process from hostile or overwhelming clients.
    pub limits: Limits,
    /// Bearer tokens that writes need; empty: writes are open (the seed's behaviour).
    pub auth_tokens: Vec<SecretString>,
    /// Where the auth tokens were looked for but not found (an optional Secret not created).
    pub auth_tokens_missing: Option<String>,
    /// When set, `/metrics` is served here only (not on the API port the ingress exposes).
    pub metrics_listen: Option<SocketAddr>,
    /// Which answered requests the access log records (`ACCESS_LOG`): failures (4xx, 5xx)
    /// always, and one success in this many; 1 (`all`, the default) logs every request,
    /// 0 (`errors`) no success at all.
    pub access_log_every: u64,
    /// data-ingest's group commit (`GROUP_COMMIT_US`): while `group_commit_writers` inserts
    /// are in flight, further single-record ingests queue and the queue is written as one
    /// multi-row insert and one commit when a writer is free, or after this long at most on a
    /// connection of its own. `None` (`off` or 0): every request commits on its own.
    pub group_commit: Option<Duration>,
    /// How many single-record inserts may be in flight before requests queue for a group
    /// commit (`GROUP_COMMIT_WRITERS`).
    pub group_commit_writers: usize,
    /// The async runtime's worker threads (`WORKER_THREADS`); `None`: the service's default.
    pub worker_threads: Option<usize>,
}

/// `GROUP_COMMIT_US` when unset: the most a queued ingest waits for a busy writer.
pub const DEFAULT_GROUP_COMMIT_US: u64 = 1000;
/// `GROUP_COMMIT_WRITERS` when unset.
pub const DEFAULT_GROUP_COMMIT_WRITERS: u64 = 2;

/// What one instance accepts at most, and how long it waits for a client.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A request head must arrive within this from its first byte.
    pub header_read_timeout: Duration,
    /// A keep-alive connection is closed after this long without a request. Above the 60 s
    /// a proxy (nginx ingress) keeps its pooled upstream connections, so the proxy closes first.
    pub idle_timeout: Duration,
    /// A whole request (body included) must be answered within this.
    pub request_timeout: Duration,
    /// Open connections; past it the oldest idle connection is closed, or the new one gets 503.
    pub max_connections: usize,
    /// Requests being served at once (health and metrics excepted); past it 503 + Retry-After.
    pub max_requests_in_flight: usize,
    /// Request body bytes held at once across all requests; past it 503 + Retry-After.
    pub max_body_bytes_in_flight: usize,
    /// Longest request target (path and query) answered; longer gets 414.
    pub max_uri_bytes: usize,
    /// Largest request head (all header lines) answered; larger gets 431.
    pub max_header_bytes: usize,
    /// Largest response body of a listing endpoint (e.g. `GET /api/v1/ingest/recent`).
    pub max_response_bytes: usize,
}

impl ServiceConfig {
    /// Reads the process environment.
    pub fn from_env(default_port: u16, default_body_limit: usize) -> Result<Self, ConfigError> {
        Self::from_lookup(default_port, default_body_limit, |k| std::env::var(k).ok())
    }

    /// Reads configuration through `lookup`, so tests can pass a map instead of the environment.
    pub fn from_lookup(
        default_port: u16,
        default_body_limit: usize,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let parse = |var: &'static str, default: u64, what: &str| -> Result<u64, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<u64>()
                    .map_err(|_| invalid(var, format!("{v:?} is not {what}"))),
            }
        };
        let port_of = |var: &'static str, default: u16| -> Result<u16, ConfigError> {
            let p = parse(var, default as u64, "a port number (1-65535)")?;
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(var, format!("{p} is not a port number (1-65535)")))
        };

        let mut listen = match get("LISTEN_ADDR") {
            None => SocketAddr::from(([0, 0, 0, 0], default_port)),
            Some(v) => v.parse().map_err(|_| {
                invalid(
                    "LISTEN_ADDR",
                    format!("{v:?} is not an address like 0.0.0.0:8080"),
                )
            })?,
        };
        if get("PORT").is_some() {
            listen.set_port(port_of("PORT", default_port)?);
        }

        let url_var = |var: &'static str, default: &str| -> Result<String, ConfigError> {
            let v = get(var).unwrap_or_else(|| default.to_string());
            let v = v.trim().trim_end_matches('/').to_string();
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(v)
            } else {
                Err(invalid(
                    var,
                    format!("{v:?} is not an http:// or https:// URL"),
                ))
            }
        };

        let pool_max = parse("DB_POOL_MAX_CONNECTIONS", 10, "a whole number")?;
        if !(1..=1000).contains(&pool_max) {
            return Err(invalid(
                "DB_POOL_MAX_CONNECTIONS",
                format!("{pool_max} is out of range (1-1000)"),
            ));
        }
        let pool_min = parse("DB_POOL_MIN_CONNECTIONS", 0, "a whole number")?;
        if pool_min > pool_max {
            return Err(invalid(
                "DB_POOL_MIN_CONNECTIONS",
                format!("{pool_min} is larger than DB_POOL_MAX_CONNECTIONS ({pool_max})"),
            ));
        }

        let database = DbConfig {
            host: get("DATABASE_HOST").unwrap_or_else(|| "localhost".into()),
            port: port_of("DATABASE_PORT", 5432)?,
            name: get("DATABASE_NAME").unwrap_or_else(|| "appdb".into()),
            user: get("DATABASE_USER").unwrap_or_else(|| "appuser".into()),
            password: SecretString::from(lookup("DATABASE_PASSWORD").unwrap_or_default()),
            url: get("DATABASE_URL").map(SecretString::from),
            pool_max: pool_max as u32,
            pool_min: pool_min as u32,
            acquire_timeout: Duration::from_millis(parse(
                "DB_ACQUIRE_TIMEOUT_MS",
                3000,
                "a duration in milliseconds",
            )?),
            statement_timeout: Duration::from_millis(parse(
                "DB_STATEMENT_TIMEOUT_MS",
                15000,
                "a duration in milliseconds",
            )?),
        };
        // Validate the URL early so a typo stops the service at startup, not at first request.
        database.connect_options()?;

        let max_body_bytes = parse(
            "MAX_BODY_BYTES",
            default_body_limit as u64,
            "a size in bytes",
        )?;
        let ms = |var: &'static str, default: u64| -> Result<Duration, ConfigError> {
            let v = parse(var, default, "a duration in milliseconds")?;
            if v == 0 {
                return Err(invalid(var, "must be more than 0 milliseconds"));
            }
            Ok(Duration::from_millis(v))
        };
        let count = |var: &'static str, default: u64| -> Result<usize, ConfigError> {
            let v = parse(var, default, "a whole number")?;
            if v == 0 {
                return Err(invalid(var, "must be at least 1"));
            }
            Ok(v as usize)
        };
        let limits = Limits {
            header_read_timeout: ms("HEADER_READ_TIMEOUT_MS", 10_000)?,
            idle_timeout: ms("IDLE_TIMEOUT_MS", 75_000)?,
            request_timeout: ms("REQUEST_TIMEOUT_MS", 30_000)?,
            max_connections: count("MAX_CONNECTIONS", 1024)?,
            max_requests_in_flight: count("MAX_REQUESTS_IN_FLIGHT", 256)?,
            max_body_bytes_in_flight: count(
                "MAX_BODY_BYTES_IN_FLIGHT",
                (2 * max_body_bytes).max(4 << 20),
            )?,
            max_uri_bytes: count("MAX_URI_BYTES", 8192)?,
            max_header_bytes: count("MAX_HEADER_BYTES", 16384)?,
            max_response_bytes: count("MAX_RESPONSE_BYTES", 8 << 20)?,
        };
        if limits.max_body_bytes_in_flight < max_body_bytes as usize {
            return Err(invalid(
                "MAX_BODY_BYTES_IN_FLIGHT",
                format!(
                    "{} is smaller than MAX_BODY_BYTES ({max_body_bytes}): no body could be accepted",
                    limits.max_body_bytes_in_flight
                ),
            ));
        }
        if limits.max_body_bytes_in_flight > u32::MAX as usize {
            return Err(invalid("MAX_BODY_BYTES_IN_FLIGHT", "must be below 4 GiB"));
        }
        let mut auth_tokens: Vec<String> = Vec::new();
        let mut auth_tokens_missing = None;
        if let Some(v) = lookup("AUTH_TOKENS") {
            auth_tokens.extend(v.split([',', '\n']).map(|t| t.trim().to_string()));
        }
        if let Some(path) = get("AUTH_TOKENS_FILE") {
            match std::fs::read_to_string(&path) {
                Ok(text) => auth_tokens.extend(text.lines().map(|t| t.trim().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    auth_tokens_missing = Some(path);
                }
                Err(e) => {
                    return Err(invalid(
                        "AUTH_TOKENS_FILE",
                        format!("cannot read {path:?}: {e}"),
                    ))
                }
            }
        }
        auth_tokens.retain(|t| !t.is_empty() && !t.starts_with('#'));
        if auth_tokens
            .iter()
            .any(|t| t.chars().count() < 16 || t.chars().any(char::is_whitespace))
        {
            // Never quote the token.
            return Err(invalid(
                "AUTH_TOKENS",
                "every token must be at least 16 characters without spaces (AUTH_TOKENS or AUTH_TOKENS_FILE)",
            ));
        }
        let metrics_listen = match get("METRICS_ADDR") {
            None => None,
            Some(v) => Some(v.trim().parse().map_err(|_| {
                invalid(
                    "METRICS_ADDR",
                    format!("{v:?} is not an address like 0.0.0.0:9090"),
                )
            })?),
        };
        let access_log_every = match get("ACCESS_LOG").as_deref().map(str::trim) {
            None | Some("all") => 1,
            Some("errors") => 0,
            Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                invalid(
                    "ACCESS_LOG",
                    format!("{v:?} is not all, errors or a whole number N (one success in N)"),
                )
            })?,
        };
        let group_commit = match get("GROUP_COMMIT_US").as_deref().map(str::trim) {
            None => Some(Duration::from_micros(DEFAULT_GROUP_COMMIT_US)),
            Some("off") | Some("0") => None,
            Some(v) => Some(
                v.parse::<u64>()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .map(Duration::from_micros)
                    .ok_or_else(|| {
                        invalid(
                            "GROUP_COMMIT_US",
                            format!(
                                "{v:?} is not off or a number of microseconds from 1 to 100000"
                            ),
                        )
                    })?,
            ),
        };
        let group_commit_writers = parse(
            "GROUP_COMMIT_WRITERS",
            DEFAULT_GROUP_COMMIT_WRITERS,
            "a whole number",
        )?;
        if !(1..=1000).contains(&group_commit_writers) {
            return Err(invalid(
                "GROUP_COMMIT_WRITERS",
                format!("{group_commit_writers} is out of range (1-1000)"),
            ));
        }
        let worker_threads = match get("WORKER_THREADS") {
            None => None,
            Some(v) => Some(
                v.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| {
                        invalid(
                            "WORKER_THREADS",
                            format!("{v:?} is not a number of threads (1-1024)"),
                        )
                    })?,
            ),
        };
        Ok(ServiceConfig {
            worker_threads,
            group_commit,
            group_commit_writers: group_commit_writers as usize,
            access_log_every,
            limits,
            auth_tokens: auth_tokens.into_iter().map(SecretString::from).collect(),
            auth_tokens_missing,
            metrics_listen,
            listen,
            region: get("REGION").unwrap_or_else(|| "local".into()),
            app_role: get("APP_ROLE"),
            database,
            business_logic_url: url_var("BUSINESS_LOGIC_URL", "http://localhost:8081")?,
            data_ingest_url: url_var("DATA_INGEST_URL", "http://localhost:8082")?,
            upstream_timeout: Duration::from_millis(parse(
                "UPSTREAM_TIMEOUT_MS",
                10000,
                "a duration in milliseconds",
            )?),
            max_body_bytes: max_body_bytes as usize,
            shutdown_drain: Duration::from_millis(parse(
                "SHUTDOWN_DRAIN_MS",
                1000,
                "a duration in milliseconds",
            )?),
            shutdown_timeout: Duration::from_millis(parse(
                "SHUTDOWN_TIMEOUT_MS",
                10000,
                "a duration in milliseconds",
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServiceConfig::from_lookup(8080, 1024, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = load(&[]).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.database.host, "localhost");
        assert_eq!(c.database.port, 5432);
        assert_eq!(c.database.name, "appdb");
        assert_eq!(c.database.user, "appuser");
        assert_eq!(c.region, "local");
        assert_eq!(c.business_logic_url, "http://localhost:8081");
        assert_eq!(c.data_ingest_url, "http://localhost:8082");
    }

    #[test]
    fn worker_threads() {
        assert_eq!(load(&[]).unwrap().worker_threads, None);
        assert_eq!(
            load(&[("WORKER_THREADS", "3")]).unwrap().worker_threads,
            Some(3)
        );
        for bad in ["0", "-1", "two", "5000"] {
            let e = load(&[("WORKER_THREADS", bad)]).unwrap_err();
            assert_eq!(e.var, "WORKER_THREADS", "{bad}");
        }
    }

    #[test]
    fn errors_name_the_variable() {
        let e = load(&[("ACCESS_LOG", "some")]).unwrap_err();
        assert_eq!(e.var, "ACCESS_LOG");
        assert_eq!(load(&[]).unwrap().access_log_every, 1);
        // Group commit is on by default; off or 0 turns it off.
        assert_eq!(
            load(&[]).unwrap().group_commit,
            Some(Duration::from_micros(DEFAULT_GROUP_COMMIT_US))
        );
        assert_eq!(
            load(&[("GROUP_COMMIT_US", "off")]).unwrap().group_commit,
            None
        );
        assert_eq!(
            load(&[("GROUP_COMMIT_US", "0")]).unwrap().group_commit,
            None
        );
        assert_eq!(
            load(&[("GROUP_COMMIT_US", "300")]).unwrap().group_commit,
            Some(Duration::from_micros(300))
        );
        assert_eq!(
            load(&[("GROUP_COMMIT_US", "x")]).unwrap_err().var,
            "GROUP_COMMIT_US"
        );
        assert_eq!(
            load(&[]).unwrap().group_commit_writers,
            DEFAULT_GROUP_COMMIT_WRITERS as usize
        );
        assert_eq!(
            load(&[("GROUP_COMMIT_WRITERS", "4")])
                .unwrap()
                .group_commit_writers,
            4
        );
        for bad in ["0", "x", "1001"] {
            assert_eq!(
                load(&[("GROUP_COMMIT_WRITERS", bad)]).unwrap_err().var,
                "GROUP_COMMIT_WRITERS"
            );
        }
        assert_eq!(
            load(&[("ACCESS_LOG", "errors")]).unwrap().access_log_every,
            0
        );
        assert_eq!(
            load(&[("ACCESS_LOG", "100")]).unwrap().access_log_every,
            100
        );
        let e = load(&[("DATABASE_PORT", "abc")]).unwrap_err();
        assert_eq!(e.var, "DATABASE_PORT");
        assert!(e.to_string().contains("\"abc\""), "{e}");
        let e = load(&[("BUSINESS_LOGIC_URL", "business-logic:8081")]).unwrap_err();
        assert_eq!(e.var, "BUSINESS_LOGIC_URL");
        let e = load(&[("DB_POOL_MIN_CONNECTIONS", "20")]).unwrap_err();
        assert_eq!(e.var, "DB_POOL_MIN_CONNECTIONS");
    }

    #[test]
    fn database_url_overrides_and_bad_url_hides_password() {
        let c = load(&[("DATABASE_URL", "postgres://u:pw@db.example:6543/other")]).unwrap();
        assert_eq!(
            c.database.describe(),
            ("db.example".into(), 6543, "other".into(), "u".into())
        );
        let e = load(&[("DATABASE_URL", "mysql://u:s3cret@x/y")]).unwrap_err();
        assert_eq!(e.var, "DATABASE_URL");
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn auth_tokens_come_from_the_variable_and_the_file_and_are_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path();
        let file = dir.join("tokens");
        std::fs::write(&file, "# one a line\nfile-token-0123456789\n").unwrap();
        let path = file.display().to_string();
        let c = load(&[
            ("AUTH_TOKENS", "env-token-0123456789"),
            ("AUTH_TOKENS_FILE", &path),
        ])
        .unwrap();
        assert_eq!(c.auth_tokens.len(), 2);
        assert!(!format!("{c:?}").contains("token-0123456789"));
        let e = load(&[("AUTH_TOKENS", "short-secret")]).unwrap_err();
        assert!(!e.to_string().contains("short-secret"), "{e}");
        // An optional Secret that was not created: no tokens, and said so.
        let absent = dir.join("absent").display().to_string();
        let c = load(&[("AUTH_TOKENS_FILE", &absent)]).unwrap();
        assert!(c.auth_tokens.is_empty());
        assert_eq!(c.auth_tokens_missing, Some(absent));
        let e = load(&[("METRICS_ADDR", "9090")]).unwrap_err();
        assert_eq!(e.var, "METRICS_ADDR");
    }

    #[test]
    fn debug_output_hides_the_password() {
        let c = load(&[("DATABASE_PASSWORD", "hunter2")]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
