//! What to capture: the one description shared by the rule generator, the
//! `portcullis capture` command and (later) the injection webhook.

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::str::FromStr;

use ipnet::IpNet;

/// The sidecar's inbound capture listener.
pub const DEFAULT_INBOUND_PORT: u16 = 15106;
/// The sidecar's outbound capture listener (outbound mode only).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15101;
/// A port that is captured on purpose: the readiness probe dials it, so a pod
/// whose redirect is broken never becomes Ready.
pub const DEFAULT_CANARY_PORT: u16 = 15122;
/// The sidecar's own ports, never captured: admin, health, metrics.
pub const DEFAULT_PROXY_PORTS: [u16; 3] = [15120, 15121, 15190];
/// The sidecar's uid and gid. Istio uses 1337 and Linkerd 2102; a distinct
/// value keeps the owner exemptions of two meshes from covering each other.
pub const DEFAULT_PROXY_UID: u32 = 1338;

/// Which directions are captured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Every TCP connection into the pod goes to the sidecar (the default).
    #[default]
    Inbound,
    /// Inbound, plus the pod's own outgoing TCP connections (opt-in).
    InboundOutbound,
    /// No capture: the sidecar is wired by hand on an explicit port.
    None,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Inbound, Mode::InboundOutbound, Mode::None];

    /// The spelling used by the CLI flag and the pod annotation.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Inbound => "inbound",
            Mode::InboundOutbound => "inbound+outbound",
            Mode::None => "none",
        }
    }

    pub fn captures_inbound(self) -> bool {
        self != Mode::None
    }

    pub fn captures_outbound(self) -> bool {
        self == Mode::InboundOutbound
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim())
            .ok_or_else(|| SpecError::InvalidMode(s.to_string()))
    }
}

/// Everything wrong a capture description can be. Each message says what to
/// change, because it ends up in an admission denial or an init container log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("invalid capture mode {0:?}: expected inbound, inbound+outbound or none")]
    InvalidMode(String),
    #[error("invalid port {0:?}: expected an integer from 1 to 65535")]
    InvalidPort(String),
    #[error("'*' is not accepted in a port or CIDR list: list the values explicitly")]
    Wildcard,
    #[error(
        "invalid CIDR {0:?}: expected an address or address/prefix, such as 10.0.0.0/8 or fd00::/8"
    )]
    InvalidCidr(String),
    #[error("CIDR {given} has host bits set; did you mean {network}?")]
    HostBitsSet { given: String, network: String },
    #[error("port {port} cannot be both the {first} and the {second}")]
    PortClash {
        port: u16,
        first: &'static str,
        second: &'static str,
    },
    #[error("the canary port {0} must be captured, so it cannot be one of the sidecar's own ports or an excluded port")]
    CanaryNotCaptured(u16),
    #[error("proxy {0} 0 is refused: exempting root from outbound capture would let every root process bypass the sidecar")]
    RootOwner(&'static str),
    #[error("neither IPv4 nor IPv6 is enabled: nothing would be captured")]
    NoFamily,
}

/// The description of what to capture, as a user or the webhook wrote it.
/// Check it with [`CaptureSpec::validate`] before generating rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureSpec {
    pub mode: Mode,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub canary_port: u16,
    /// The sidecar's own listening ports (admin, health, metrics).
    pub proxy_ports: Vec<u16>,
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<IpNet>,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Default for CaptureSpec {
    fn default() -> Self {
        CaptureSpec {
            mode: Mode::default(),
            inbound_port: DEFAULT_INBOUND_PORT,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            canary_port: DEFAULT_CANARY_PORT,
            proxy_ports: DEFAULT_PROXY_PORTS.to_vec(),
            exclude_inbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
            exclude_outbound_cidrs: Vec::new(),
            proxy_uid: DEFAULT_PROXY_UID,
            proxy_gid: DEFAULT_PROXY_UID,
            ipv4: true,
            ipv6: true,
        }
    }
}

/// A [`CaptureSpec`] that passed validation, with its lists sorted and
/// de-duplicated so that the same intent always renders the same text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidSpec(CaptureSpec);

impl Deref for ValidSpec {
    type Target = CaptureSpec;

    fn deref(&self) -> &CaptureSpec {
        &self.0
    }
}

impl CaptureSpec {
    pub fn validate(mut self) -> Result<ValidSpec, SpecError> {
        for list in [
            &mut self.proxy_ports,
            &mut self.exclude_inbound_ports,
            &mut self.exclude_outbound_ports,
        ] {
            if list.contains(&0) {
                return Err(SpecError::InvalidPort("0".into()));
            }
            list.sort_unstable();
            list.dedup();
        }
        self.exclude_outbound_cidrs.sort_unstable();
        self.exclude_outbound_cidrs.dedup();
        self.check_ports()?;
        if self.proxy_uid == 0 {
            return Err(SpecError::RootOwner("uid"));
        }
        if self.proxy_gid == 0 {
            return Err(SpecError::RootOwner("gid"));
        }
        if !self.ipv4 && !self.ipv6 {
            return Err(SpecError::NoFamily);
        }
        Ok(ValidSpec(self))
    }

    fn check_ports(&self) -> Result<(), SpecError> {
        let singles = [
            (self.inbound_port, "inbound capture port"),
            (self.outbound_port, "outbound capture port"),
            (self.canary_port, "canary port"),
        ];
        for (i, (port, first)) in singles.iter().enumerate() {
            if *port == 0 {
                return Err(SpecError::InvalidPort("0".into()));
            }
            if let Some((_, second)) = singles[i + 1..].iter().find(|(p, _)| p == port) {
                return Err(clash(*port, first, second));
            }
        }
        // The capture ports must stay captured: excluding one would let a
        // client dial the sidecar's listener without a redirect.
        for (port, what) in &singles[..2] {
            if self.proxy_ports.contains(port) {
                return Err(clash(*port, what, "sidecar's own ports"));
            }
            if self.exclude_inbound_ports.contains(port) {
                return Err(clash(*port, what, "excluded inbound ports"));
            }
        }
        if self.proxy_ports.contains(&self.canary_port)
            || self.exclude_inbound_ports.contains(&self.canary_port)
        {
            return Err(SpecError::CanaryNotCaptured(self.canary_port));
        }
        Ok(())
    }

    /// The command-line arguments of `portcullis capture` that describe this
    /// spec, so the webhook can write the init container's args from it.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("--mode={}", self.mode),
            format!("--inbound-port={}", self.inbound_port),
            format!("--outbound-port={}", self.outbound_port),
            format!("--canary-port={}", self.canary_port),
            format!("--proxy-ports={}", join(&self.proxy_ports)),
            format!(
                "--exclude-inbound-ports={}",
                join(&self.exclude_inbound_ports)
            ),
            format!(
                "--exclude-outbound-ports={}",
                join(&self.exclude_outbound_ports)
            ),
            format!(
                "--exclude-outbound-cidrs={}",
                join(&self.exclude_outbound_cidrs)
            ),
            format!("--proxy-uid={}", self.proxy_uid),
            format!("--proxy-gid={}", self.proxy_gid),
        ];
        let on_off = |b: bool| if b { "on" } else { "off" };
        args.push(format!("--ipv4={}", on_off(self.ipv4)));
        args.push(format!("--ipv6={}", on_off(self.ipv6)));
        args
    }
}

fn clash(port: u16, first: &'static str, second: &'static str) -> SpecError {
    SpecError::PortClash {
        port,
        first,
        second,
    }
}

pub(crate) fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses a comma-separated port list such as `"9090, 9091"`. An empty string
/// is an empty list; `*`, ranges and 0 are refused.
pub fn parse_ports(text: &str) -> Result<Vec<u16>, SpecError> {
    list_items(text)
        .map(|item| match item.parse::<u16>() {
            _ if item == "*" => Err(SpecError::Wildcard),
            Ok(0) | Err(_) => Err(SpecError::InvalidPort(item.to_string())),
            Ok(port) => Ok(port),
        })
        .collect()
}

/// Parses a comma-separated CIDR list. A bare address means that one host.
pub fn parse_cidrs(text: &str) -> Result<Vec<IpNet>, SpecError> {
    list_items(text).map(parse_cidr).collect()
}

fn parse_cidr(item: &str) -> Result<IpNet, SpecError> {
    if item == "*" {
        return Err(SpecError::Wildcard);
    }
    let net = match item.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => item
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|_| SpecError::InvalidCidr(item.to_string()))?,
    };
    // iptables would silently truncate 10.1.2.3/8; say so instead of guessing.
    if net.trunc() != net {
        return Err(SpecError::HostBitsSet {
            given: item.to_string(),
            network: net.trunc().to_string(),
        });
    }
    Ok(net)
}

fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_avoid_other_meshes() {
        let spec = CaptureSpec::default().validate().unwrap();
        assert_ne!(spec.proxy_uid, 1337, "Istio's uid");
        assert_ne!(spec.proxy_uid, 2102, "Linkerd's uid");
        let ours = [spec.inbound_port, spec.outbound_port, spec.canary_port];
        for port in ours.iter().chain(&spec.proxy_ports) {
            assert!(
                !(15000..=15090).contains(port),
                "{port} is in Istio's range"
            );
            assert!(
                !(4140..=4191).contains(port),
                "{port} is in Linkerd's range"
            );
        }
    }

    #[test]
    fn mode_round_trips_and_rejects_unknown() {
        for mode in Mode::ALL {
            assert_eq!(mode.as_str().parse::<Mode>().unwrap(), mode);
        }
        assert_eq!(
            "outbound".parse::<Mode>(),
            Err(SpecError::InvalidMode("outbound".into()))
        );
    }

    #[test]
    fn port_lists() {
        assert_eq!(parse_ports(" 9090, 8081 ,").unwrap(), vec![9090, 8081]);
        assert_eq!(parse_ports("").unwrap(), Vec::<u16>::new());
        for bad in ["0", "65536", "80-90", "http", "-1"] {
            assert_eq!(
                parse_ports(bad),
                Err(SpecError::InvalidPort(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(parse_ports("80, *"), Err(SpecError::Wildcard));
        assert_eq!(parse_cidrs("*"), Err(SpecError::Wildcard));
    }

    #[test]
    fn cidr_lists() {
        let nets = parse_cidrs("10.0.0.0/8,fd00::/8,192.0.2.7").unwrap();
        let shown: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.0.0.0/8", "fd00::/8", "192.0.2.7/32"]);
        assert_eq!(
            parse_cidrs("10.0.0.0/33"),
            Err(SpecError::InvalidCidr("10.0.0.0/33".into()))
        );
        assert_eq!(
            parse_cidrs("10.1.2.3/8"),
            Err(SpecError::HostBitsSet {
                given: "10.1.2.3/8".into(),
                network: "10.0.0.0/8".into()
            })
        );
    }

    #[test]
    fn validation_refuses_clashes_root_and_no_family() {
        let base = CaptureSpec::default;
        let cases: Vec<(CaptureSpec, &str)> = vec![
            (
                CaptureSpec {
                    outbound_port: DEFAULT_INBOUND_PORT,
                    ..base()
                },
                "port 15106 cannot be both the inbound capture port and the outbound capture port",
            ),
            (
                CaptureSpec {
                    proxy_ports: vec![15106],
                    ..base()
                },
                "port 15106 cannot be both the inbound capture port and the sidecar's own ports",
            ),
            (
                CaptureSpec {
                    exclude_inbound_ports: vec![15122],
                    ..base()
                },
                "the canary port 15122 must be captured",
            ),
            (
                CaptureSpec {
                    proxy_uid: 0,
                    ..base()
                },
                "proxy uid 0 is refused",
            ),
            (
                CaptureSpec {
                    proxy_gid: 0,
                    ..base()
                },
                "proxy gid 0 is refused",
            ),
            (
                CaptureSpec {
                    ipv4: false,
                    ipv6: false,
                    ..base()
                },
                "neither IPv4 nor IPv6",
            ),
            (
                CaptureSpec {
                    exclude_outbound_ports: vec![0],
                    ..base()
                },
                "invalid port \"0\"",
            ),
        ];
        for (spec, want) in cases {
            let err = spec.validate().unwrap_err().to_string();
            assert!(err.starts_with(want), "{err:?} should start with {want:?}");
        }
    }

    #[test]
    fn validation_sorts_and_dedups() {
        let spec = CaptureSpec {
            exclude_inbound_ports: vec![9091, 9090, 9091],
            exclude_outbound_cidrs: parse_cidrs("fd00::/8,10.0.0.0/8,10.0.0.0/8").unwrap(),
            ..CaptureSpec::default()
        }
        .validate()
        .unwrap();
        assert_eq!(spec.exclude_inbound_ports, [9090, 9091]);
        assert_eq!(join(&spec.exclude_outbound_cidrs), "10.0.0.0/8,fd00::/8");
    }
}
