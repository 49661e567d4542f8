//! Both regions' PostgreSQL: the primary region's node initialised as primary, the DR region's
//! cloned from it as a streaming standby (slot `dr_slot`), each told about the other as its
//! peer (start.sh's split-brain guard), as the overlays configure them.

use std::net::IpAddr;
use std::sync::Arc;

use super::node::{PgNode, PgNodeConfig, RoleFiles, SharedNode};
use super::PgResult;

/// How to make a pair.
#[derive(Debug, Clone)]
pub struct PgPairConfig {
    /// The primary region's node (default 127.0.0.2, a free port).
    pub primary: PgNodeConfig,
    /// The DR region's node (default 127.0.0.3, a free port).
    pub dr: PgNodeConfig,
}

impl PgPairConfig {
    /// Regions `primary` on 127.0.0.2 and `dr` on 127.0.0.3, both with `password` as the
    /// secret's `password` (superuser and replication fall back to it, as in the manifests).
    pub fn new(password: &str) -> Self {
        let ip = |s: &str| s.parse::<IpAddr>().expect("literal address");
        PgPairConfig {
            primary: PgNodeConfig::new("primary", ip("127.0.0.2"), password),
            dr: PgNodeConfig::new("dr", ip("127.0.0.3"), password),
        }
    }
}

/// The two regions' nodes.
#[derive(Debug)]
pub struct PgPair {
    /// The primary region's node.
    pub primary: SharedNode,
    /// The DR region's node.
    pub dr: SharedNode,
}

impl PgPair {
    /// Creates both nodes and writes their roles (primary; standby of the primary), without
    /// starting anything: for pods run by [`super::PgPodRuntime`], whose ConfigMaps then hold
    /// [`PgPair::initial_roles`].
    pub fn new(cfg: PgPairConfig) -> PgResult<PgPair> {
        let primary = Arc::new(PgNode::new(cfg.primary)?);
        let dr = Arc::new(PgNode::new(cfg.dr)?);
        let pair = PgPair { primary, dr };
        let (p, d) = pair.initial_roles();
        pair.primary.write_role(&p)?;
        pair.dr.write_role(&d)?;
        Ok(pair)
    }

    /// Creates both nodes and starts them: the primary (`init-primary`), then the standby
    /// (`clone-standby`), each ready when this returns.
    pub async fn start(cfg: PgPairConfig) -> PgResult<PgPair> {
        let pair = Self::new(cfg)?;
        pair.primary.start().await?;
        pair.dr.start().await?;
        Ok(pair)
    }

    /// The roles the overlays give: the primary region primary, DR its standby.
    pub fn initial_roles(&self) -> (RoleFiles, RoleFiles) {
        (
            RoleFiles::primary(self.dr.addr()),
            RoleFiles::standby_of(self.primary.addr()),
        )
    }

    /// The roles the overlays give when each region reaches the other's database at an
    /// address of its own (a WAN relay): the primary's peer is `dr_from_primary`, DR streams
    /// from `primary_from_dr`.
    pub fn roles_via(
        &self,
        primary_from_dr: std::net::SocketAddr,
        dr_from_primary: std::net::SocketAddr,
    ) -> (RoleFiles, RoleFiles) {
        (
            RoleFiles::primary(dr_from_primary),
            RoleFiles::standby_of(primary_from_dr),
        )
    }

    /// The node of `region` (`primary` or `dr`).
    pub fn region(&self, region: &str) -> Option<&SharedNode> {
        match region {
            "primary" => Some(&self.primary),
            "dr" => Some(&self.dr),
            _ => None,
        }
    }

    /// The node of the other region.
    pub fn peer_of(&self, region: &str) -> Option<&SharedNode> {
        match region {
            "primary" => Some(&self.dr),
            "dr" => Some(&self.primary),
            _ => None,
        }
    }
}
