//! Integration tests of drd-db against the real lab: each region a Kubernetes API double whose
//! `postgresql` StatefulSet pod runs real PostgreSQL 15 through the manifests' start.sh, reached
//! by kube port-forward with the password from `postgresql-secret`, as drdctl reaches AKS.
//! One test binary; every test builds its own lab on free ports, so they run in parallel.

mod errors;
mod failover;
mod init_db;
mod replication;
mod support;
