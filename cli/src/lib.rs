//! drdctl, the operator CLI: deploy, verify, fail over and fail back a two-region application.
//!
//! `main` parses, loads the config, runs one command from [`commands`], and maps the outcome
//! to an exit code from [`exit`].

pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dbhost;
pub mod engine;
pub mod exit;
pub mod guard;
pub mod kustomize;
pub mod ui;
pub mod verify;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command};

pub fn main() -> ExitCode {
    quiet_on_broken_pipe();
    let cli = Cli::parse();
    init_logs(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("drdctl: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    runtime.block_on(run(cli))
}

/// Diagnostic logs on stderr, off unless asked for: `-v` shows drdctl's own debug lines (each
/// database session opened and how long it took, the steps' phases), `-vv` its trace lines,
/// `DRDCTL_LOG` any filter (`DRDCTL_LOG=drd_db=debug,sqlx=info`). sqlx's statement log stays
/// out unless `DRDCTL_LOG` names it. `drdctl guard` logs at info without either.
fn init_logs(verbose: u8) {
    let filter = match std::env::var("DRDCTL_LOG") {
        Ok(f) if !f.trim().is_empty() => f,
        _ => match verbose {
            0 => return,
            1 => "drdctl=debug,drd_db=debug,drd_kube=debug,drd_dns=debug".into(),
            _ => "drdctl=trace,drd_db=trace,drd_kube=trace,drd_dns=trace".into(),
        },
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("drdctl: DRDCTL_LOG={filter:?} is not a log filter ({e}); logs stay off");
            return;
        }
    };
    // Colour only on a terminal, and never with NO_COLOR set (no-color.org).
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_env_filter(filter)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .try_init();
}

/// `drdctl ... | head -1`: when stdout is closed early, `println!` panics ("failed printing
/// to stdout: Broken pipe"). That is not an error of drdctl's: end quietly with 141 (128 +
/// SIGPIPE, what a shell reports for a process the pipe killed). Restoring SIGPIPE's default
/// would also kill drdctl on a closed network socket, so the panic is caught instead.
fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Broken pipe") || msg.contains("os error 32") {
            std::process::exit(exit::BROKEN_PIPE as i32);
        }
        default(info)
    }));
}

/// An error chain printed once, outermost first, each layer once: a layer whose text the
/// previous one already contains is left out (kube-rs and hyper repeat their causes).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out: Vec<String> = Vec::new();
    for layer in e.chain() {
        let text = layer.to_string();
        if out.iter().any(|o| o.contains(text.trim())) || text.trim().is_empty() {
            continue;
        }
        out.push(text);
    }
    out.join(": ")
}

async fn run(cli: Cli) -> ExitCode {
    let output = cli.output;
    match &cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "drdctl", &mut std::io::stdout());
            return ExitCode::from(exit::OK);
        }
        Command::Docs { dir } => {
            return match commands::docs::write(dir) {
                Ok(files) => {
                    for f in files {
                        println!("{}", f.display());
                    }
                    ExitCode::from(exit::OK)
                }
                Err(e) => {
                    eprintln!("drdctl docs: error: {}", chain(&e));
                    ExitCode::from(exit::FAILED)
                }
            };
        }
        Command::Guard(args) => {
            return match guard::run(args.clone()).await {
                Ok(()) => ExitCode::from(exit::OK),
                Err(e) => {
                    eprintln!("drdctl guard: error: {}", chain(&e));
                    ExitCode::from(exit::USAGE)
                }
            };
        }
        _ => {}
    }
    #[cfg(feature = "lab")]
    if let Command::Lab {
        action,
        dir,
        repo,
        out,
        keep,
        region,
        from,
        refuse,
        wan_rtt,
        wan_mbit,
    } = &cli.command
    {
        if action == "drill" && (wan_rtt.is_some() || wan_mbit.is_some()) {
            return usage_error(anyhow::anyhow!(
                "drdctl lab drill takes the distance from the environment, not from \
                 --wan-rtt/--wan-mbit: DRDCTL_LAB_WAN_RTT_MS=40 DRDCTL_LAB_WAN_MBIT=200 drdctl lab drill"
            ));
        }
        // (DRDCTL_LAB_DIR is read by clap into `dir`.)
        let dir = commands::lab_home::dir(dir.clone(), action, None);
        let root = match commands::lab_home::repo(repo.as_deref(), &dir) {
            Ok(r) => r,
            Err(e) => return usage_error(e),
        };
        if action == "drill" {
            let args = commands::drill::Args {
                dir,
                out: std::path::absolute(out).unwrap_or_else(|_| out.clone()),
                keep: *keep,
            };
            return match commands::drill::run(args, &root).await {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("drdctl lab drill: error: {}", chain(&e));
                    ExitCode::from(exit::FAILED)
                }
            };
        }
        let rtt = match wan_rtt.as_deref().map(commands::lab::parse_rtt).transpose() {
            Ok(r) => r,
            Err(e) => return usage_error(e.context("--wan-rtt")),
        };
        let need_region = || {
            region
                .map(|r| r.name().to_string())
                .ok_or_else(|| anyhow::anyhow!("drdctl lab {action} needs --region primary|dr"))
        };
        let result = match action.as_str() {
            "up" => {
                let wan = lab::wan::WanSettings {
                    rtt_ms: rtt.unwrap_or(0.0),
                    mbit: wan_mbit.unwrap_or(0.0),
                };
                let r = commands::lab::up_with_wan(&dir, &root, wan).await;
                if r.is_ok() {
                    commands::lab_home::remember(&dir);
                }
                r
            }
            "serve" => commands::lab::serve(&dir, &root).await,
            "status" if output == cli::Output::Json => {
                println!("{}", commands::lab_home::status_json(&dir));
                Ok(())
            }
            "status" => commands::lab::status(&dir).await,
            "wan" => commands::lab::wan(&dir, rtt, *wan_mbit).await,
            "partition" => match need_region() {
                Ok(r) => commands::lab::partition(&dir, &r, from, *refuse).await,
                Err(e) => Err(e),
            },
            "heal" => {
                let r = region.map(|r| r.name());
                commands::lab::heal(&dir, r).await
            }
            "kill-region" => match need_region() {
                Ok(r) => commands::lab::kill_region(&dir, &r).await,
                Err(e) => Err(e),
            },
            _ => {
                let r = commands::lab::down(&dir).await;
                commands::lab_home::forget(&dir);
                r
            }
        };
        return match result {
            Ok(()) => ExitCode::from(exit::OK),
            Err(e) => {
                eprintln!("drdctl lab {action}: error: {}", chain(&e));
                ExitCode::from(exit::FAILED)
            }
        };
    }
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut config = match config::Config::load_with_env(&cli.config, &env) {
        Ok(c) => c,
        Err(e) => return usage_error(e.into()),
    };
    config.override_with(
        cli.kubeconfig.clone(),
        [
            ("primary", cli.context_primary.clone()),
            ("dr", cli.context_dr.clone()),
        ],
        cli.timeout,
    );
    let result = match cli.command {
        Command::Deploy {
            region,
            registry,
            image_version,
            dry_run,
            no_wait,
            force_conflicts,
            rollout_timeout,
        } => {
            let regions = region.names();
            commands::deploy::run_with_output(
                &config,
                commands::deploy::Args {
                    regions,
                    registry,
                    version: image_version,
                    dry_run,
                    no_wait,
                    force_conflicts,
                    timeout: Duration::from_secs(rollout_timeout),
                    password: None,
                },
                output,
            )
            .await
        }
        Command::Verify {
            junit,
            region,
            checks,
            check_timeout,
            rto_budget,
            max_lag_bytes,
            max_lag_seconds,
            no_db,
        } => {
            let regions = region.names();
            let args = commands::verify::Args {
                regions,
                checks,
                output,
                junit,
                timeout: Duration::from_millis(check_timeout),
                rto_budget_secs: rto_budget,
                max_lag_bytes,
                max_lag_seconds,
                skip_databases: no_db,
            };
            return match commands::verify::run(&config, args).await {
                Ok(code) => ExitCode::from(code),
                // Verify could not run at all (configuration, credentials): exit 2.
                Err(e) => usage_error(e),
            };
        }
        Command::BuildPush {
            registry,
            image_version,
            services,
            builder,
            platform,
            base_image,
        } => {
            let args = commands::build_push::Args {
                registry,
                version: image_version,
                services,
                builder,
                platform,
                base_image,
            };
            commands::build_push::run(&config, args, output).await
        }
        Command::InitDb {
            region,
            file,
            wait,
            dry_run,
        } => {
            let args = commands::db::InitDbArgs {
                region: region.name().to_string(),
                file,
                wait: Duration::from_secs(wait),
                dry_run,
            };
            commands::db::init_db_output(&config, args, output).await
        }
        Command::Status { state_dir } => {
            return code_of(commands::db::status(&config, output, &state_dir).await);
        }
        Command::Dns { action } => {
            if let Err(e) = commands::dns::dns_config(&config) {
                return usage_error(e);
            }
            commands::dns::run(&config, action, output).await
        }
        Command::Failover {
            to,
            plan,
            yes,
            allow_data_loss,
            max_replay_age,
            allow_stale_standby,
            rejoin,
            discard_writes_of,
            state_dir,
            max_lag_bytes,
        } => {
            let args = commands::failover::Args {
                kind: engine::plan::RunKind::Failover,
                to,
                plan,
                yes,
                json: output == cli::Output::Json,
                state_dir,
                lag_bound_bytes: max_lag_bytes,
                rejoin,
                allow_data_loss,
                discard_writes_of,
                max_replay_age_secs: (!allow_stale_standby).then_some(max_replay_age),
            };
            return code_of(commands::failover::run(&config, args).await);
        }
        Command::Failback {
            plan,
            yes,
            discard_writes_of,
            state_dir,
            max_lag_bytes,
        } => {
            let args = commands::failover::Args {
                kind: engine::plan::RunKind::Failback,
                to: cli::Region::Primary,
                plan,
                yes,
                json: output == cli::Output::Json,
                state_dir,
                lag_bound_bytes: max_lag_bytes,
                rejoin: true,
                allow_data_loss: false,
                discard_writes_of,
                max_replay_age_secs: None,
            };
            return code_of(commands::failover::run(&config, args).await);
        }
        Command::Practice(args) => {
            return code_of(commands::practice::run(&config, args, output).await);
        }
        Command::History { limit } => {
            audit::history(&config, output == cli::Output::Json, limit).await
        }
        Command::Abandon { yes, state_dir } => {
            return code_of(
                commands::failover::abandon(&config, &state_dir, yes, output == cli::Output::Json)
                    .await,
            );
        }
        #[cfg(feature = "lab")]
        Command::Lab { .. } => unreachable!("handled above"),
        Command::Completions { .. } | Command::Docs { .. } | Command::Guard(_) => {
            unreachable!("handled above")
        }
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(e) => {
            eprintln!("drdctl: error: {}", chain(&e));
            ExitCode::from(exit::FAILED)
        }
    }
}

/// A command that picks its own exit code; an error is a failure (1).
fn code_of(r: anyhow::Result<u8>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let f = exit::Failure::from(e);
            eprintln!("drdctl: error: {}", chain(f.error()));
            ExitCode::from(f.code())
        }
    }
}

fn usage_error(e: anyhow::Error) -> ExitCode {
    eprintln!("drdctl: error: {}", chain(&e));
    ExitCode::from(exit::USAGE)
}
