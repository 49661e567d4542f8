//! What gets an image: the three services and, on request (`--service drdctl`), drdctl itself
//! for the witness guard sidecar (`drdctl guard`, docs/witness.md): the cargo package (also the
//! binary and the image name) and the port it listens on in its image.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A service of the application that `build-push` turns into an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    FrontendApi,
    BusinessLogic,
    DataIngest,
    /// drdctl, for the witness guard: built only when asked for (`--service drdctl`).
    Drdctl,
}

impl Service {
    /// Every service, in a fixed order (the order images are built and reported in).
    pub const ALL: [Service; 3] = [
        Service::FrontendApi,
        Service::BusinessLogic,
        Service::DataIngest,
    ];

    /// What can be asked for by name: the services, then drdctl.
    pub const KNOWN: [Service; 4] = [
        Service::FrontendApi,
        Service::BusinessLogic,
        Service::DataIngest,
        Service::Drdctl,
    ];

    /// The cargo package, the binary, and the last component of the image name.
    pub fn name(self) -> &'static str {
        match self {
            Service::FrontendApi => "frontend-api",
            Service::BusinessLogic => "business-logic",
            Service::DataIngest => "data-ingest",
            Service::Drdctl => "drdctl",
        }
    }

    /// The port the service listens on in its image (exposed, and in `LISTEN_ADDR`).
    pub fn port(self) -> u16 {
        match self {
            Service::FrontendApi => 8080,
            Service::BusinessLogic => 8081,
            Service::DataIngest => 8082,
            // `drdctl guard`'s peer and state endpoint.
            Service::Drdctl => 8091,
        }
    }

    /// Where the binary lives in the image.
    pub fn binary_path(self) -> String {
        format!("/usr/local/bin/{}", self.name())
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A service name that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown service `{0}`: expected one of frontend-api, business-logic, data-ingest, drdctl (the witness guard's image)"
)]
pub struct UnknownService(pub String);

impl FromStr for Service {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::KNOWN
            .into_iter()
            .find(|svc| svc.name() == s)
            .ok_or_else(|| UnknownService(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_choices() {
        for s in Service::ALL {
            assert_eq!(s.name().parse::<Service>().unwrap(), s);
            assert_eq!(s.to_string(), s.name());
        }
        let e = "frontend".parse::<Service>().unwrap_err();
        assert!(e
            .to_string()
            .contains("frontend-api, business-logic, data-ingest"));
    }

    #[test]
    fn drdctl_is_built_only_when_asked_for() {
        assert_eq!("drdctl".parse::<Service>().unwrap(), Service::Drdctl);
        assert!(!Service::ALL.contains(&Service::Drdctl));
        assert_eq!(Service::Drdctl.port(), 8091);
    }

    #[test]
    fn ports_match_the_services_defaults() {
        assert_eq!(Service::FrontendApi.port(), 8080);
        assert_eq!(Service::BusinessLogic.port(), 8081);
        assert_eq!(Service::DataIngest.port(), 8082);
        assert_eq!(
            Service::DataIngest.binary_path(),
            "/usr/local/bin/data-ingest"
        );
    }
}
