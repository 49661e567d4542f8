//! Starts two Kubernetes API doubles (regions `primary` and `dr`) on loopback, writes a
//! kubeconfig for them and waits, for manual checks with real kubectl:
//!
//! ```text
//! cargo run -p lab --example kube_double
//! kubectl --kubeconfig <printed path> --context dr get deploy
//! ```
//!
//! `PRIMARY_ADDR` / `DR_ADDR` pick the addresses (default 127.0.0.2:0 and 127.0.0.3:0).

use std::net::SocketAddr;

use lab::kube_api::write_kubeconfig;
use lab::KubeDouble;

fn addr_from_env(var: &str, default: &str) -> Result<SocketAddr, Box<dyn std::error::Error>> {
    Ok(std::env::var(var)
        .unwrap_or_else(|_| default.to_string())
        .parse()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let primary =
        KubeDouble::start("primary", addr_from_env("PRIMARY_ADDR", "127.0.0.2:0")?).await?;
    let dr = KubeDouble::start("dr", addr_from_env("DR_ADDR", "127.0.0.3:0")?).await?;
    let dir = std::env::temp_dir().join(format!("kube-double-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("kubeconfig");
    write_kubeconfig(&path, &[("primary", &primary.url()), ("dr", &dr.url())])?;
    println!("{}", path.display());
    eprintln!(
        "primary: {}  dr: {}  (Ctrl-C to stop)",
        primary.url(),
        dr.url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(())
}
