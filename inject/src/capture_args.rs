//! The command line of the capture init container.
//!
//! The flags are the ones `portcullis capture` (the `portcullis-capture`
//! crate's [`portcullis_capture::CaptureArgs`]) accepts; [`CaptureArgs::check`]
//! parses the rendered line with that very parser and validates the spec it
//! describes, so a renamed flag or a spec the init container would refuse is
//! caught here, at admission, instead of as a pod stuck in `Init:Error`.
//!
//! Only the flags that matter for the mode are written (the capture crate's
//! defaults cover the rest, and `--ipv6` stays `auto`: a pod network without
//! IPv6 would make `ip6tables-restore` fail), so the injected pod stays short
//! to read.

use clap::Parser;

use crate::settings::CaptureMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureArgs {
    pub mode: CaptureMode,
    pub capture_port: u16,
    pub outbound_capture_port: u16,
    pub canary_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Includes the sidecar's own admin port, so probes and metrics scrapes
    /// reach it directly whatever the capture crate's built-in list is.
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<String>,
}

/// The capture crate's flags under a stand-in binary name, for [`CaptureArgs::check`].
#[derive(Parser)]
struct CaptureCommand {
    #[command(flatten)]
    args: portcullis_capture::CaptureArgs,
}

impl CaptureArgs {
    /// `args` for a container whose `command` is `["portcullis"]`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "capture".to_string(),
            "--mode".into(),
            self.mode.as_str().into(),
            "--inbound-port".into(),
            self.capture_port.to_string(),
            "--canary-port".into(),
            self.canary_port.to_string(),
        ];
        if !self.exclude_inbound_ports.is_empty() {
            args.push("--exclude-inbound-ports".into());
            args.push(join(&self.exclude_inbound_ports));
        }
        if self.mode == CaptureMode::InboundOutbound {
            args.extend([
                "--outbound-port".into(),
                self.outbound_capture_port.to_string(),
                "--proxy-uid".into(),
                self.proxy_uid.to_string(),
                "--proxy-gid".into(),
                self.proxy_gid.to_string(),
            ]);
            if !self.exclude_outbound_ports.is_empty() {
                args.push("--exclude-outbound-ports".into());
                args.push(join(&self.exclude_outbound_ports));
            }
            if !self.exclude_outbound_cidrs.is_empty() {
                args.push("--exclude-outbound-cidrs".into());
                args.push(self.exclude_outbound_cidrs.join(","));
            }
        }
        args
    }

    /// Parses [`Self::to_args`] as `portcullis capture` will, and validates
    /// the resulting spec. The error is the capture crate's own message.
    pub fn check(&self) -> Result<portcullis_capture::ValidSpec, String> {
        self.parse()?.spec().map_err(|e| e.to_string())
    }

    fn parse(&self) -> Result<portcullis_capture::CaptureArgs, String> {
        let argv = self.to_args();
        // argv[0] is the subcommand name, which stands in for the binary.
        CaptureCommand::try_parse_from(&argv)
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use portcullis_capture::{CaptureSpec, Mode};

    use super::*;

    fn args(mode: CaptureMode) -> CaptureArgs {
        CaptureArgs {
            mode,
            capture_port: 15106,
            outbound_capture_port: 15101,
            canary_port: 15122,
            proxy_uid: 1338,
            proxy_gid: 1338,
            exclude_inbound_ports: vec![15120, 9090],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec!["10.0.0.0/8".into()],
        }
    }

    #[test]
    fn inbound_has_no_outbound_flags() {
        assert_eq!(
            args(CaptureMode::Inbound).to_args().join(" "),
            "capture --mode inbound --inbound-port 15106 --canary-port 15122 \
             --exclude-inbound-ports 15120,9090"
        );
    }

    #[test]
    fn outbound_carries_owner_exemption() {
        let a = args(CaptureMode::InboundOutbound).to_args().join(" ");
        assert!(a.contains("--mode inbound+outbound"));
        assert!(a.contains("--outbound-port 15101 --proxy-uid 1338 --proxy-gid 1338"));
        assert!(a.ends_with("--exclude-outbound-ports 5432 --exclude-outbound-cidrs 10.0.0.0/8"));
    }

    /// The contract with the init container: what the webhook writes is
    /// what the capture crate's own parser reads, field for field.
    #[test]
    fn the_capture_parser_reads_what_the_webhook_writes() {
        let inbound = args(CaptureMode::Inbound).check().unwrap();
        assert_eq!(inbound.mode, Mode::Inbound);
        assert_eq!(inbound.inbound_port, 15106);
        assert_eq!(inbound.canary_port, 15122);
        assert_eq!(inbound.exclude_inbound_ports, [9090, 15120]);
        assert!(inbound.exclude_outbound_ports.is_empty());

        let mut custom = args(CaptureMode::InboundOutbound);
        custom.capture_port = 16106;
        custom.outbound_capture_port = 16101;
        custom.canary_port = 16122;
        custom.proxy_uid = 2000;
        custom.proxy_gid = 3000;
        let spec = custom.check().unwrap();
        let want = CaptureSpec {
            mode: Mode::InboundOutbound,
            inbound_port: 16106,
            outbound_port: 16101,
            canary_port: 16122,
            exclude_inbound_ports: vec![9090, 15120],
            exclude_outbound_ports: vec![5432],
            exclude_outbound_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
            proxy_uid: 2000,
            proxy_gid: 3000,
            // `--ipv6` is left to `auto`, which depends on this kernel.
            ipv6: spec.ipv6,
            ..CaptureSpec::default()
        };
        assert_eq!(*spec, want);
    }

    #[test]
    fn a_spec_the_init_container_would_refuse_is_caught() {
        let mut clash = args(CaptureMode::Inbound);
        clash.exclude_inbound_ports.push(15122);
        let err = clash.check().unwrap_err();
        assert!(err.contains("15122"), "{err}");
        let mut root = args(CaptureMode::InboundOutbound);
        root.proxy_uid = 0;
        assert!(root.check().is_err());
    }
}
