//! drd-registry's integration tests, one binary (one link, one shared set-up): build-push
//! against a real registry (`native`), the Docker builder (`docker`), ACR tokens
//! (`acr_token`), and every error naming its fix (`errors`).

mod acr_token;
mod common;
mod docker;
mod errors;
mod native;
