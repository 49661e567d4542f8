//! What every request handler of the Azure double can reach: the DNS store, ARM's faults, the
//! request log, the token issuer and the blob store.

use std::sync::Arc;

use super::blob::BlobStore;
use super::faults::{ArmFaults, RequestLog};
use super::store::AzureStore;
use super::token::TokenIssuer;

/// What every request handler can reach.
pub(crate) struct Ctx {
    pub store: Arc<AzureStore>,
    pub faults: Arc<ArmFaults>,
    pub requests: Arc<RequestLog>,
    pub tokens: Arc<TokenIssuer>,
    pub blobs: Arc<BlobStore>,
}
