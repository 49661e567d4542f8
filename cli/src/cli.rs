//! The command line: every subcommand and flag, with the help an operator reads at 3 a.m.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "drdctl",
    version,
    about = "Disaster recovery for a two-region application: deploy, verify, fail over, fail back",
    long_about = "drdctl moves a live application (database, services, DNS) from its primary \
                  Kubernetes cluster to its DR cluster and back, without losing data and without \
                  guessing. Every destructive command has --plan and asks for confirmation.",
    propagate_version = true,
    after_long_help = TOP_HELP
)]
pub struct Cli {
    /// Configuration file (regions, kube contexts, DNS, registry). Without one, drdctl runs on
    /// defaults from PRIMARY_CLUSTER, DR_CLUSTER, DNS_ZONE and APP_HOSTNAME (the seed's).
    #[arg(
        long,
        global = true,
        env = "DRDCTL_CONFIG",
        default_value = "drdctl.toml"
    )]
    pub config: PathBuf,
    /// Output format: text for people, json for programs (JSON on stdout; progress and prompts
    /// on stderr).
    #[arg(
        short,
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "DRDCTL_OUTPUT"
    )]
    pub output: Output,
    /// The kubeconfig to use (instead of kube.kubeconfig in drdctl.toml, $KUBECONFIG, ~/.kube/config).
    #[arg(long, global = true, env = "DRDCTL_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The primary region's kube context (instead of regions.primary.context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context_primary: Option<String>,
    /// The DR region's kube context (instead of regions.dr.context).
    #[arg(long, global = true, value_name = "CONTEXT")]
    pub context_dr: Option<String>,
    /// Bound on every network call (Kubernetes API, database connections): 2s, 500ms, 1m.
    /// On expiry the message names the server, the context and the step.
    #[arg(long, global = true, env = "DRDCTL_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<std::time::Duration>,
    /// Diagnostic logs on stderr: -v debug (each database session and how long it took, the
    /// steps' phases), -vv trace. DRDCTL_LOG=<filter> sets any filter instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// One of the two regions, typed end to end (the engine, the journal, JSON output).
#[derive(
    ValueEnum,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Primary,
    Dr,
}

impl Region {
    pub fn name(self) -> &'static str {
        match self {
            Region::Primary => "primary",
            Region::Dr => "dr",
        }
    }
    pub fn other(self) -> Region {
        match self {
            Region::Primary => Region::Dr,
            Region::Dr => Region::Primary,
        }
    }
    pub fn parse(s: &str) -> Option<Region> {
        match s {
            "primary" => Some(Region::Primary),
            "dr" => Some(Region::Dr),
            _ => None,
        }
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionOrAll {
    Primary,
    Dr,
    All,
}

impl RegionOrAll {
    /// The regions selected, primary first.
    pub fn names(self) -> Vec<String> {
        match self {
            RegionOrAll::Primary => vec!["primary".into()],
            RegionOrAll::Dr => vec!["dr".into()],
            RegionOrAll::All => vec!["primary".into(), "dr".into()],
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// For people (the default).
    #[value(name = "text", alias = "human")]
    Human,
    /// One JSON document on stdout.
    Json,
}

/// `2s`, `500ms`, `1m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 2s, 500ms, 1m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        other => return Err(format!("unknown unit {other:?} in {s:?} (use ms, s or m)")),
    };
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("{s:?}: the timeout must be positive"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// The top-level help's tail: exit codes and where to read more.
const TOP_HELP: &str = "\
Exit codes (every command; docs/cli.md):
  0    success (status: one active region, everyone agrees)
  1    failed or refused before anything changed (a verify check failed)
  2    usage or configuration error
  3    stopped midway: resume with the same command, or drdctl abandon
  4    status: split brain (two writable databases)
  5    status: no region can be named active
  130  interrupted before anything changed
  141  stdout closed early (e.g. piped into head): ends quietly

Examples:
  drdctl status                          who is active, and does everyone agree?
  drdctl verify                          is each region ready for its role?
  drdctl failover --to dr --plan         what a failover would do now
  drdctl failover --to dr                do it (type \"dr\" to confirm)
  drdctl failback                        come back (rejoins the old primary first)
  drdctl completions bash > /etc/bash_completion.d/drdctl

Configuration: drdctl.toml (--config), every key also DRDCTL_<SECTION>__<KEY> (e.g.
DRDCTL_REGIONS__DR__CONTEXT); precedence: flag > variable > file > default.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build the service images (no Docker daemon needed) and push them; record their digests.
    ///
    /// Native builder: cargo build --release, a reproducible layer with the binary on a base
    /// image, pushed through the OCI distribution API (blobs the registry has are skipped).
    /// Tags: VERSION and the git revision. The digests go to .drdctl/images.json, where
    /// `drdctl deploy` pins both regions to the same bytes. Credentials: docker config.json,
    /// DRDCTL_REGISTRY_USERNAME/PASSWORD, or an ACR token; never printed.
    #[command(after_help = EX_BUILD_PUSH)]
    BuildPush {
        /// `host[:port][/namespace]`; default images.registry in drdctl.toml.
        #[arg(long, env = "DRDCTL_REGISTRY")]
        registry: Option<String>,
        /// Version tag; default images.version in drdctl.toml.
        #[arg(long = "image-version", id = "image_version", env = "DRDCTL_VERSION")]
        image_version: Option<String>,
        /// Only these services (repeatable; default: all three). `drdctl` builds the witness
        /// guard's image (docs/witness.md), only when named.
        #[arg(long = "service")]
        services: Vec<String>,
        /// `native` (no daemon) or `docker` (docker buildx with the Dockerfiles).
        #[arg(long, default_value = "native")]
        builder: String,
        #[arg(long, default_value = "linux/amd64")]
        platform: String,
        /// Base image (`scratch` for static binaries); default: distroless glibc, by digest.
        #[arg(long)]
        base_image: Option<String>,
    },
    /// Render the region's overlay and apply it server-side, then wait for the rollouts.
    ///
    /// Prints each object as created, configured or unchanged. Creates Secret
    /// postgresql-secret when missing (password from DRDCTL_POSTGRES_PASSWORD or a hidden
    /// prompt). ConfigMap keys that record the active region keep their live values.
    #[command(after_help = EX_DEPLOY)]
    Deploy {
        #[arg(long, value_enum, default_value = "all")]
        region: RegionOrAll,
        /// Image registry (with --image-version): images become REGISTRY/<service>:VERSION.
        #[arg(long, env = "DRDCTL_REGISTRY")]
        registry: Option<String>,
        /// Version tag of the images (with --registry); default images.version.
        #[arg(long = "image-version", id = "deploy_version", env = "DRDCTL_VERSION")]
        image_version: Option<String>,
        /// Server-side dry run: validate everything, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not wait for the rollouts.
        #[arg(long)]
        no_wait: bool,
        /// Take over fields another field manager owns (kubectl apply --force-conflicts).
        #[arg(long)]
        force_conflicts: bool,
        /// How long to wait for the rollouts, in seconds.
        #[arg(
            long = "rollout-timeout",
            default_value_t = 300,
            value_name = "SECONDS"
        )]
        rollout_timeout: u64,
    },
    /// Apply init-db.sql on the primary database, in one transaction (idempotent).
    ///
    /// Waits (with progress) until the database accepts connections; refuses a standby and
    /// says to run it on the primary; records the schema version, so a second run says it is
    /// already applied and changes nothing; creates the DR replication slot.
    #[command(after_help = EX_INIT_DB)]
    InitDb {
        #[arg(long, value_enum, default_value = "primary")]
        region: Region,
        #[arg(long, default_value = "init-db.sql")]
        file: PathBuf,
        /// How long to wait for the database to accept connections, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
        /// Apply and roll back: report what would happen, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check that each region is ready to take over.
    ///
    /// Checks run concurrently, each with its own timeout: kube API and namespace, deployments
    /// ready for the region's role, crash-looping pods, service health through the ingress,
    /// the same images in both regions; databases: exactly one writable primary, ConfigMap
    /// role = database role, standby streaming, lag within bounds, replication slot, same
    /// schema version; DNS: the record at the active region, name servers in sync, TTL.
    /// Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 verify could
    /// not run (configuration, credentials).
    #[command(after_help = EX_VERIFY)]
    Verify {
        /// Also write a JUnit XML report to FILE.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Only this region's checks (and no cross-region ones).
        #[arg(long, value_enum, default_value = "all")]
        region: RegionOrAll,
        /// Only checks with this name or prefix (repeatable): e.g. --check app --check kube.api.
        #[arg(long = "check")]
        checks: Vec<String>,
        /// Per-check timeout in milliseconds.
        #[arg(long = "check-timeout", default_value_t = 5000, value_name = "MS")]
        check_timeout: u64,
        /// Recovery-time budget in seconds: a DNS TTL above it is a warning.
        #[arg(long, default_value_t = 300)]
        rto_budget: u32,
        /// The standby may be at most this many WAL bytes behind.
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_lag_bytes: u64,
        /// ... and at most this many seconds.
        #[arg(long, default_value_t = 30.0)]
        max_lag_seconds: f64,
        /// Skip the database checks.
        #[arg(long)]
        no_db: bool,
    },
    /// Both regions on one screen: the active region and whether everyone agrees on it,
    /// database roles, LSNs, lag, deployments, DNS, an unfinished run, the switchover lock.
    ///
    /// Exit codes: 0 one active region that the databases, the app roles and DNS agree on;
    /// 4 split brain (two writable databases); 5 no region can be named active (unreachable,
    /// or the observers disagree, e.g. a run stopped midway); 2 configuration error.
    #[command(after_help = EX_STATUS)]
    Status {
        /// Where failover/failback keep their journal (to show an unfinished run).
        #[arg(long, env = "DRDCTL_STATE_DIR", default_value = ".drdctl")]
        state_dir: PathBuf,
    },
    /// Run the region's guard beside its PostgreSQL: fence the database when the witness term
    /// names the other region or cannot be confirmed for longer than the lease.
    ///
    /// A long-running process (a container in the postgresql pod; the lab starts one per
    /// region). It reads the term blob every poll, asks the other region's guard when Azure
    /// does not answer, and a watchdog child process enforces the lease even while the guard
    /// is stopped. It never lifts a fence. See docs/witness.md.
    #[command(after_help = EX_GUARD)]
    Guard(crate::guard::GuardArgs),
    /// Rehearse a failover in the DR cluster without touching production.
    ///
    /// In a throwaway namespace (drdctl-practice-<id>) of the DR cluster: NetworkPolicies, a
    /// copy of the DR standby (base backup) promoted there in isolation, the three services
    /// from DR's images, the seed's checks (info, a read of recent data, a write). Reports the
    /// practice RTO (start to first accepted write), the data's freshness (last replayed
    /// commit), and production before/after (objects, replication, DNS: must be identical;
    /// the DR standby must keep streaming). Then deletes the namespace, unless --keep.
    /// Exit codes: 0 passed; 1 a check failed or production changed; 3 clean-up failed; 130
    /// interrupted (Ctrl-C: cleaned up all the same).
    #[command(after_help = crate::commands::practice::EXAMPLES)]
    Practice(crate::commands::practice::PracticeArgs),
    /// Who changed what, when: every mutating run (deploy, init-db, failover, failback,
    /// abandon, dns switch/prepare/restore, practice), newest first, with its steps.
    ///
    /// The history lives in the DR cluster (ConfigMaps labelled drdctl.io/history=true,
    /// append-only); each run also records an Event on app-config in the regions it touched
    /// (kubectl get events). Nothing secret is in it.
    #[command(after_help = EX_HISTORY)]
    History {
        /// At most this many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Close an unfinished failover or failback without resuming it (after showing the state).
    ///
    /// Changes nothing in the clusters: the next `failover` or `failback` decides from the live
    /// state. Use it when a stopped run should not be resumed (e.g. you want the other
    /// direction now).
    #[command(after_help = EX_ABANDON)]
    Abandon {
        /// Skip the typed confirmation.
        #[arg(long)]
        yes: bool,
        #[arg(long, env = "DRDCTL_STATE_DIR", default_value = ".drdctl")]
        state_dir: PathBuf,
    },
    /// Move the application to the DR region (planned switchover, or emergency).
    #[command(after_help = EX_FAILOVER)]
    Failover {
        /// The region to make active.
        #[arg(long, value_enum, visible_alias = "region")]
        to: Region,
        /// Print the steps the live state calls for and change nothing.
        #[arg(long)]
        plan: bool,
        /// Skip the typed confirmation.
        #[arg(long)]
        yes: bool,
        /// Emergency failover when the primary is unreachable may lose recent writes.
        #[arg(long)]
        allow_data_loss: bool,
        /// Emergency RPO guard: refuse when DR's last replayed transaction is older than this
        /// many seconds (what the primary committed since is lost).
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        max_replay_age: u64,
        /// Lift the RPO guard (an idle application replays nothing, so its standby looks old).
        #[arg(long)]
        allow_stale_standby: bool,
        /// Rejoin the old primary as a standby of the new one (pg_rewind) instead of stopping it.
        #[arg(long)]
        rejoin: bool,
        /// With two writable databases (split brain): the region whose writes since the fork
        /// are discarded (it is fenced and rejoined). Refused otherwise.
        #[arg(long, value_enum, value_name = "REGION")]
        discard_writes_of: Option<Region>,
        /// Where the journal and the lock live.
        #[arg(long, env = "DRDCTL_STATE_DIR", default_value = ".drdctl")]
        state_dir: PathBuf,
        /// Refuse to start when the standby is further behind than this (bytes).
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_lag_bytes: u64,
    },
    /// Return to the primary region after a failover.
    ///
    /// Brings the old primary back as a standby of DR (start.sh rewinds it; a fresh clone only
    /// when rewind is impossible), waits until it has caught up, then runs the same planned
    /// switchover back, rejoining DR as a standby and restoring its replica counts.
    #[command(after_help = EX_FAILBACK)]
    Failback {
        /// Print the steps the live state calls for and change nothing.
        #[arg(long)]
        plan: bool,
        /// Skip the typed confirmation.
        #[arg(long)]
        yes: bool,
        /// With two writable databases (split brain): the region whose writes since the fork
        /// are discarded.
        #[arg(long, value_enum, value_name = "REGION")]
        discard_writes_of: Option<Region>,
        /// Where the journal and the lock live.
        #[arg(long, env = "DRDCTL_STATE_DIR", default_value = ".drdctl")]
        state_dir: PathBuf,
        /// Refuse to switch back while the rejoined standby is further behind (bytes).
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_lag_bytes: u64,
    },
    /// The application's DNS record in Azure DNS: show it, switch it, lower or restore its TTL.
    ///
    /// Every write is guarded by the record's ETag (If-Match): a change someone else made
    /// between the read and the write is never overwritten; drdctl re-reads and re-decides.
    /// Credentials: AZURE_CLIENT_ID/AZURE_CLIENT_SECRET/AZURE_TENANT_ID, workload identity,
    /// managed identity or the Azure CLI ([dns] auth in drdctl.toml).
    #[command(after_help = EX_DNS)]
    Dns {
        #[command(subcommand)]
        action: DnsAction,
    },
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    #[command(
        after_help = "Examples:\n  drdctl completions bash > /etc/bash_completion.d/drdctl\n  drdctl completions zsh > \"${fpath[1]}/_drdctl\"\n  drdctl completions fish > ~/.config/fish/completions/drdctl.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (one per command) and the Markdown reference into DIR.
    #[command(
        after_help = "Examples:\n  drdctl docs --dir docs          # docs/man/*.1 and docs/cli-reference.md (checked in; a test keeps them current)\n  man -l docs/man/drdctl-failover.1"
    )]
    Docs {
        #[arg(long, default_value = "docs")]
        dir: PathBuf,
    },
    /// The local two-region lab: `up`, `drill`, `status`, `down`.
    ///
    /// `up` starts both regions in a background process (Kubernetes API doubles whose pods
    /// are real: PostgreSQL through the manifests' start.sh, the services as processes; the
    /// Azure DNS double and its name server), deploys the manifests, applies init-db.sql, and
    /// prints how to point kubectl, drdctl and dig at it. `down` stops everything it started
    /// and removes its files; safe to run twice.
    ///
    /// `drill` runs the whole exercise: `up`, traffic through the application's DNS name,
    /// `failover --to dr --rejoin`, `verify`, `failback`, `verify`, then a report (steps and
    /// times, write-unavailability, requests sent / acknowledged / failed, acknowledged writes
    /// missing afterwards) and a timeline picture (SVG) in --out; the lab is torn down unless
    /// --keep. Exit 0 when everything passed and no acknowledged write is missing.
    #[cfg(feature = "lab")]
    #[command(after_help = EX_LAB)]
    Lab {
        #[arg(value_parser = ["up", "drill", "status", "down", "serve", "wan", "partition", "heal", "kill-region"])]
        action: String,
        /// partition, heal, kill-region: the region (primary or dr).
        #[arg(long)]
        region: Option<Region>,
        /// partition: whom to cut the region off from: operator, clients, azure, and the
        /// other region (primary or dr), comma-separated.
        #[arg(long = "from", value_delimiter = ',')]
        from: Vec<String>,
        /// partition: refuse connections (and reset open ones) instead of blackholing them.
        #[arg(long)]
        refuse: bool,
        /// up, wan: round-trip time added between the regions, and between each region and
        /// the operator, the clients and Azure (40ms).
        #[arg(long, value_name = "RTT")]
        wan_rtt: Option<String>,
        /// up, wan: bandwidth cap per link and direction, in Mbit/s (0: none).
        #[arg(long, value_name = "MBIT")]
        wan_mbit: Option<f64>,
        /// Where the lab keeps its files (default .drdctl/lab; `status` and `down` find the
        /// running lab without it).
        #[arg(long, env = "DRDCTL_LAB_DIR")]
        dir: Option<PathBuf>,
        /// A drdctl checkout whose manifests/ and init-db.sql the lab deploys (default: the
        /// current directory's repository, else the copy built into drdctl).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// drill: where the report and the picture go.
        #[arg(long, default_value = ".drdctl/drill")]
        out: PathBuf,
        /// drill: leave the lab running afterwards.
        #[arg(long)]
        keep: bool,
    },
}

/// Shells `drdctl completions` writes a script for.
pub use clap_complete::Shell;

#[derive(Subcommand, Debug)]
pub enum DnsAction {
    /// The record, its TTL and ETag, and what each authoritative name server answers.
    #[command(after_help = EX_SHOW)]
    Show {},
    /// Point the record at a region's ingress and wait until the name servers serve it.
    #[command(after_help = EX_SWITCH)]
    Switch {
        /// The region the record should point at.
        #[arg(long, value_enum, visible_alias = "region")]
        to: Region,
        /// Say what would change; change nothing.
        #[arg(long)]
        plan: bool,
        /// Skip the typed confirmation.
        #[arg(long)]
        yes: bool,
        /// Also set this TTL (seconds); default: keep the record's TTL.
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Lower the TTL ahead of a planned failover (then wait the old TTL before failing over).
    #[command(after_help = EX_PREPARE)]
    Prepare {
        /// The new TTL in seconds.
        #[arg(long, default_value_t = 60)]
        ttl: u32,
        /// Say what would change; change nothing.
        #[arg(long)]
        plan: bool,
    },
    /// Put back the TTL `prepare` recorded (or --ttl).
    #[command(after_help = EX_RESTORE)]
    Restore {
        /// The TTL to set, in seconds (default: the one `prepare` recorded).
        #[arg(long)]
        ttl: Option<u32>,
        /// Say what would change; change nothing.
        #[arg(long)]
        plan: bool,
    },
}

const EX_HISTORY: &str = "Examples:\n  drdctl history\n  drdctl history --limit 5\n  drdctl -o json history | jq '.[0].steps'\n  kubectl --context dr get events --field-selector reason=DrdctlFailover";
// The EXAMPLES section of each command's help.
const EX_GUARD: &str = "Examples:\n  # the sidecar of manifests/witness/<region> sets these from its environment\n  DRDCTL_POSTGRES_PASSWORD=... drdctl guard --region primary \\\n    --db-url postgres://postgres@127.0.0.1:5432/postgres \\\n    --witness-url https://drdwitness.blob.core.windows.net/drdctl/term \\\n    --peer http://postgresql-guard.dr.example.internal:8091\n  curl -s http://127.0.0.1:8091/v1/state | jq .lease_left_s   # its view: term, lease, why it fenced";
const EX_BUILD_PUSH: &str = "Examples:\n  drdctl build-push --registry myacr.azurecr.io --image-version 1.4.0\n  drdctl build-push --service data-ingest --image-version 1.4.1\n  drdctl -o json build-push                  # digests as JSON";
const EX_DEPLOY: &str = "Examples:\n  drdctl deploy                              # both regions, then wait for the rollouts\n  drdctl deploy --region dr --dry-run        # validate against the server, change nothing\n  drdctl deploy --registry myacr.azurecr.io --image-version 1.4.0";
const EX_INIT_DB: &str = "Examples:\n  drdctl init-db                             # on the primary, idempotent\n  drdctl init-db --dry-run                   # apply and roll back: what would change\n  drdctl -o json init-db";
const EX_VERIFY: &str = "Examples:\n  drdctl verify                              # every check, both regions\n  drdctl verify --region dr --check app      # only DR's app checks\n  drdctl -o json verify --junit verify.xml   # for CI";
const EX_STATUS: &str = "Examples:\n  drdctl status\n  drdctl -o json status | jq .summary.active\n  drdctl status || echo \"exit $?: 4 split brain, 5 unknown\"";
const EX_ABANDON: &str = "Examples:\n  drdctl abandon                             # shows the run and the state, asks\n  drdctl abandon --yes --state-dir /var/lib/drdctl";
const EX_FAILOVER: &str = "Examples:\n  drdctl failover --to dr --plan             # every step and what it would change\n  drdctl -o json failover --to dr --plan     # the same plan as JSON\n  drdctl failover --to dr                    # type \"dr\" to confirm\n  drdctl failover --to dr --rejoin --yes     # unattended; old primary rewound into a standby\n  drdctl failover --to dr --allow-data-loss  # the primary region is gone (emergency)\n  drdctl failover --to dr --discard-writes-of primary   # resolve a split brain";
const EX_FAILBACK: &str = "Examples:\n  drdctl failback --plan\n  drdctl failback                            # type \"primary\" to confirm";
const EX_DNS: &str = "Examples:\n  drdctl dns show\n  drdctl dns prepare --ttl 60                # a day ahead of a planned failover\n  drdctl dns switch --to dr --plan\n  drdctl dns restore";
#[cfg(feature = "lab")]
const EX_LAB: &str = "Examples:\n  drdctl lab drill                           # the whole exercise, with a report\n  drdctl lab up && drdctl lab status\n  drdctl lab up --wan-rtt 40ms --wan-mbit 200 # the regions a WAN apart\n  drdctl lab partition --region primary --from operator,dr   # cut off, connections hang\n  drdctl lab heal\n  drdctl lab kill-region --region primary     # SIGKILL everything of one region\n  drdctl lab down";
const EX_SHOW: &str = "Examples:\n  drdctl dns show\n  drdctl -o json dns show";
const EX_SWITCH: &str =
    "Examples:\n  drdctl dns switch --to dr --plan\n  drdctl dns switch --to dr --yes";
const EX_PREPARE: &str =
    "Examples:\n  drdctl dns prepare --ttl 60 --plan\n  drdctl dns prepare --ttl 60";
const EX_RESTORE: &str = "Examples:\n  drdctl dns restore --plan\n  drdctl dns restore --ttl 3600";

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_interface_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn failover_needs_a_target() {
        assert!(Cli::try_parse_from(["drdctl", "failover"]).is_err());
        let c = Cli::try_parse_from(["drdctl", "failover", "--to", "dr", "--plan"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Failover {
                to: Region::Dr,
                plan: true,
                ..
            }
        ));
    }
}
