//! `portcullis capture`: the command-line face, as a library function so the
//! proxy's `main.rs` can mount it as a subcommand.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use clap::ValueEnum;
use ipnet::IpNet;

use crate::detect;
use crate::exec::{Exec, System};
use crate::rules::{self, Backend, Family};
use crate::spec::{self, CaptureSpec, Mode, SpecError, ValidSpec};
use crate::{apply, CaptureError};

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// nft if it works here, unless the namespace already uses legacy iptables.
    Auto,
    Iptables,
    Nft,
}

/// `--ipv4` / `--ipv6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Toggle {
    /// On when the kernel has the family (IPv6: `/proc/net/if_inet6` exists).
    Auto,
    On,
    Off,
}

/// A comma-separated port list, as a single flag value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

impl FromStr for PortList {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        spec::parse_ports(s).map(PortList)
    }
}

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&spec::join(&self.0))
    }
}

/// A comma-separated CIDR list, as a single flag value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<IpNet>);

impl FromStr for CidrList {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        spec::parse_cidrs(s).map(CidrList)
    }
}

/// Installs (or removes) the nat rules that send the pod's TCP connections
/// to the Portcullis sidecar. Run by the pod's init container, as root with
/// NET_ADMIN and NET_RAW.
#[derive(clap::Args, Clone, Debug)]
pub struct CaptureArgs {
    /// Print the rules instead of applying them.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove every Portcullis rule instead of installing them.
    #[arg(long)]
    pub clean: bool,
    /// Firewall front end.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// What to capture: inbound, inbound+outbound or none.
    #[arg(long, default_value_t = Mode::Inbound)]
    pub mode: Mode,
    /// The sidecar's inbound capture listener.
    #[arg(long, default_value_t = spec::DEFAULT_INBOUND_PORT)]
    pub inbound_port: u16,
    /// The sidecar's outbound capture listener (inbound+outbound mode).
    #[arg(long, default_value_t = spec::DEFAULT_OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Captured on purpose; the readiness probe goes through it.
    #[arg(long, default_value_t = spec::DEFAULT_CANARY_PORT)]
    pub canary_port: u16,
    /// The sidecar's own ports (admin, health, metrics), never captured.
    #[arg(long, default_value = "15120,15121,15190")]
    pub proxy_ports: PortList,
    /// Inbound ports that bypass the sidecar, e.g. "9090,9091".
    #[arg(long, default_value = "")]
    pub exclude_inbound_ports: PortList,
    /// Outbound destination ports that are not captured.
    #[arg(long, default_value = "")]
    pub exclude_outbound_ports: PortList,
    /// Outbound destination networks that are not captured, e.g. "10.0.0.0/8,fd00::/8".
    #[arg(long, default_value = "")]
    pub exclude_outbound_cidrs: CidrList,
    /// The sidecar's uid: its own connections are never captured.
    #[arg(long, default_value_t = spec::DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// The sidecar's gid [default: the uid].
    #[arg(long)]
    pub proxy_gid: Option<u32>,
    /// Capture IPv4.
    #[arg(long, value_enum, default_value_t = Toggle::On)]
    pub ipv4: Toggle,
    /// Capture IPv6 (auto: when the kernel has IPv6).
    #[arg(long, value_enum, default_value_t = Toggle::Auto)]
    pub ipv6: Toggle,
}

impl CaptureArgs {
    /// The validated spec these flags describe.
    pub fn spec(&self) -> Result<ValidSpec, SpecError> {
        CaptureSpec {
            mode: self.mode,
            inbound_port: self.inbound_port,
            outbound_port: self.outbound_port,
            canary_port: self.canary_port,
            proxy_ports: self.proxy_ports.0.clone(),
            exclude_inbound_ports: self.exclude_inbound_ports.0.clone(),
            exclude_outbound_ports: self.exclude_outbound_ports.0.clone(),
            exclude_outbound_cidrs: self.exclude_outbound_cidrs.0.clone(),
            proxy_uid: self.proxy_uid,
            proxy_gid: self.proxy_gid.unwrap_or(self.proxy_uid),
            ipv4: resolve(self.ipv4, Family::V4),
            ipv6: resolve(self.ipv6, Family::V6),
        }
        .validate()
    }

    fn families(&self) -> Vec<Family> {
        [(self.ipv4, Family::V4), (self.ipv6, Family::V6)]
            .into_iter()
            .filter(|(t, f)| resolve(*t, *f))
            .map(|(_, f)| f)
            .collect()
    }
}

/// `auto` means: on if the kernel has the family. Without IPv6 in the
/// kernel there is no IPv6 traffic to let past, and `ip6tables-restore`
/// would fail.
fn resolve(toggle: Toggle, family: Family) -> bool {
    match (toggle, family) {
        (Toggle::On, _) | (Toggle::Auto, Family::V4) => true,
        (Toggle::Off, _) => false,
        (Toggle::Auto, Family::V6) => Path::new("/proc/net/if_inet6").exists(),
    }
}

/// Runs `portcullis capture` with the parsed flags, writing what it did (or,
/// with `--dry-run`, the rules) to `out`.
pub fn run(args: &CaptureArgs, out: &mut dyn Write) -> Result<(), CaptureError> {
    run_with(&System, args, out)
}

pub fn run_with(
    exec: &dyn Exec,
    args: &CaptureArgs,
    out: &mut dyn Write,
) -> Result<(), CaptureError> {
    // Validate before touching anything, even for --clean: a typo in the
    // flags should not silently remove the rules.
    let spec = args.spec()?;
    let backend = match args.backend {
        BackendChoice::Auto => detect::detect(exec)?,
        BackendChoice::Iptables => Backend::Iptables,
        BackendChoice::Nft => Backend::Nft,
    };
    let scripts = if args.clean {
        apply::clean_with(exec, backend, &args.families(), args.dry_run)?
    } else {
        apply::apply_with(exec, &spec, backend, args.dry_run)?
    };
    if args.dry_run {
        writeln!(out, "# backend: {backend}")?;
        out.write_all(rules::render(&scripts).as_bytes())?;
    } else {
        let what = if args.clean {
            "removed Portcullis rules"
        } else {
            "applied Portcullis rules"
        };
        let (mode, n) = (spec.mode, scripts.len());
        writeln!(
            out,
            "portcullis capture: {what} with {backend} (mode {mode}, {n} transaction(s))"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CaptureArgs,
    }

    fn parse(argv: &[&str]) -> Result<CaptureArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("capture").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn defaults_are_the_spec_defaults() {
        let args = parse(&["--ipv6=on"]).unwrap();
        assert_eq!(*args.spec().unwrap(), CaptureSpec::default());
    }

    #[test]
    fn spec_to_args_round_trips() {
        let spec = CaptureSpec {
            mode: Mode::InboundOutbound,
            inbound_port: 16000,
            exclude_inbound_ports: vec![9090, 9091],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: spec::parse_cidrs("10.0.0.0/8,fd00::/8").unwrap(),
            proxy_uid: 2000,
            proxy_gid: 3000,
            ipv6: false,
            ..CaptureSpec::default()
        };
        let argv = spec.to_args();
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let back = parse(&refs).unwrap().spec().unwrap();
        assert_eq!(*back, spec);
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let cases = [
            (vec!["--mode=outbound"], "invalid capture mode \"outbound\""),
            (vec!["--exclude-inbound-ports=80,*"], "'*' is not accepted"),
            (
                vec!["--exclude-inbound-ports=70000"],
                "invalid port \"70000\"",
            ),
            (
                vec!["--exclude-outbound-cidrs=10.0.0.1/8"],
                "did you mean 10.0.0.0/8?",
            ),
            (vec!["--backend=pf"], "invalid value 'pf'"),
        ];
        for (argv, want) in cases {
            let err = match parse(&argv) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{argv:?} parsed"),
            };
            assert!(err.contains(want), "{argv:?}: {err}");
        }
        let args = parse(&["--proxy-uid=0"]).unwrap();
        assert!(matches!(args.spec(), Err(SpecError::RootOwner("uid"))));
    }
}
