//! The command line of the capture init container.
//!
//! This crate deliberately does not depend on the `capture` crate (built in
//! parallel); it only renders the flags that `portcullis capture` is
//! expected to accept. If a flag is renamed there, change it here and the
//! goldens will show every affected pod.

use crate::settings::CaptureMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureArgs {
    pub mode: CaptureMode,
    pub capture_port: u16,
    pub outbound_capture_port: u16,
    pub proxy_uid: u32,
    pub proxy_gid: u32,
    /// Includes the sidecar's own admin port, so probes and metrics scrapes
    /// reach it directly whatever the capture crate's built-in list is.
    pub exclude_inbound_ports: Vec<u16>,
    pub exclude_outbound_ports: Vec<u16>,
    pub exclude_outbound_cidrs: Vec<String>,
}

impl CaptureArgs {
    /// `args` for a container whose `command` is `["portcullis"]`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "capture".to_string(),
            "--mode".into(),
            self.mode.as_str().into(),
            "--capture-port".into(),
            self.capture_port.to_string(),
        ];
        if !self.exclude_inbound_ports.is_empty() {
            args.push("--exclude-inbound-ports".into());
            args.push(join(&self.exclude_inbound_ports));
        }
        if self.mode == CaptureMode::InboundOutbound {
            args.extend([
                "--outbound-capture-port".into(),
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
    use super::*;

    fn args(mode: CaptureMode) -> CaptureArgs {
        CaptureArgs {
            mode,
            capture_port: 15106,
            outbound_capture_port: 15101,
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
            "capture --mode inbound --capture-port 15106 --exclude-inbound-ports 15120,9090"
        );
    }

    #[test]
    fn outbound_carries_owner_exemption() {
        let a = args(CaptureMode::InboundOutbound).to_args().join(" ");
        assert!(a.contains("--mode inbound+outbound"));
        assert!(a.contains("--proxy-uid 1338 --proxy-gid 1338"));
        assert!(a.ends_with("--exclude-outbound-ports 5432 --exclude-outbound-cidrs 10.0.0.0/8"));
    }
}
