//! business-logic: see the library for what it does.

fn main() {
    use business_logic::{api::Api, DEFAULT_BODY_LIMIT, DEFAULT_PORT, SPEC};
    common::server::main(SPEC, DEFAULT_PORT, DEFAULT_BODY_LIMIT, Api::new)
}
