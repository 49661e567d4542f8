//! frontend-api: see the library for what it does.

fn main() {
    use frontend_api::{api::Api, upstream::Upstreams, DEFAULT_BODY_LIMIT, DEFAULT_PORT, SPEC};
    common::server::main(SPEC, DEFAULT_PORT, DEFAULT_BODY_LIMIT, |state| {
        let upstreams = Upstreams::new(&state.config).expect("the HTTP client builds");
        Api::new(state, upstreams)
    })
}
