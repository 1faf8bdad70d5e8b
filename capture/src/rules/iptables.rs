//! `iptables-restore --noflush` text: one `*nat` transaction per family.

use super::{multiport_chunks, Family};
use crate::spec::ValidSpec;

/// Every chain we own starts with this, so cleanup can find them all,
/// including chains an older version made and this one no longer does.
const PREFIX: &str = "PORTCULLIS_";
const INBOUND: &str = "PORTCULLIS_INBOUND";
const IN_REDIRECT: &str = "PORTCULLIS_IN_REDIRECT";
const OUTPUT: &str = "PORTCULLIS_OUTPUT";
const REDIRECT: &str = "PORTCULLIS_REDIRECT";

/// Chain declarations and rules of one table, kept apart so that every
/// chain is declared before a rule names it.
#[derive(Default)]
struct Body {
    chains: Vec<String>,
    rules: Vec<String>,
}

impl Body {
    fn chain(&mut self, name: &str) {
        self.chains.push(format!(":{name} - [0:0]"));
    }

    fn rule(&mut self, line: String) {
        self.rules.push(line);
    }

    fn comment(&mut self, text: &str) {
        self.rules.extend(text.lines().map(|l| format!("# {l}")));
    }
}

pub(crate) fn render(spec: &ValidSpec, family: Family) -> String {
    render_with_cleanup(spec, family, &[])
}

/// The rules, preceded in the same transaction by `cleanup` (see
/// [`cleanup_lines`]), which is how `apply` makes a re-run idempotent.
pub(crate) fn render_with_cleanup(spec: &ValidSpec, family: Family, cleanup: &[String]) -> String {
    let mut body = Body::default();
    if spec.mode.captures_inbound() {
        inbound(spec, &mut body);
    }
    if spec.mode.captures_outbound() {
        outbound(spec, family, &mut body);
    }
    let fam = match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    let header = format!("# Portcullis capture rules: mode {}, {fam}.\n", spec.mode);
    let lines: Vec<String> = body.chains.into_iter().chain(body.rules).collect();
    transaction(&header, cleanup, &lines)
}

/// One nat-table transaction: `cleanup` first (removing whatever Portcullis
/// installed before), then `body`. Being one `COMMIT`, a re-run never leaves
/// the table half old and half new.
pub(crate) fn transaction(header: &str, cleanup: &[String], body: &[String]) -> String {
    let mut out = String::from(header);
    out.push_str("*nat\n");
    for line in cleanup.iter().chain(body) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

fn inbound(spec: &ValidSpec, body: &mut Body) {
    body.chain(INBOUND);
    body.chain(IN_REDIRECT);
    body.comment(&format!(
        "Inbound: every TCP connection into the pod goes to the capture port {}, except the\n\
         sidecar's own ports and excluded ports. The canary port {} is captured on purpose.",
        spec.inbound_port, spec.canary_port
    ));
    body.rule(format!(
        "-A {IN_REDIRECT} -p tcp -j REDIRECT --to-ports {}",
        spec.inbound_port
    ));
    for ports in multiport_chunks(&spec.proxy_ports) {
        body.rule(format!(
            "-A {INBOUND} -p tcp -m multiport --dports {ports} -j RETURN"
        ));
    }
    for ports in multiport_chunks(&spec.exclude_inbound_ports) {
        body.rule(format!(
            "-A {INBOUND} -p tcp -m multiport --dports {ports} -j RETURN"
        ));
    }
    body.rule(format!("-A {INBOUND} -p tcp -j {IN_REDIRECT}"));
    body.rule(format!("-A PREROUTING -p tcp -j {INBOUND}"));
}

fn outbound(spec: &ValidSpec, family: Family, body: &mut Body) {
    body.chain(OUTPUT);
    body.chain(REDIRECT);
    body.comment(&format!(
        "Outbound: the pod's own TCP connections go to the capture port {}. The sidecar's own\n\
         connections (uid {} / gid {}) are never re-captured: without that exemption it would\n\
         loop into itself.",
        spec.outbound_port, spec.proxy_uid, spec.proxy_gid
    ));
    body.rule(format!(
        "-A {REDIRECT} -p tcp -j REDIRECT --to-ports {}",
        spec.outbound_port
    ));
    body.rule(format!(
        "-A {OUTPUT} -m owner --uid-owner {} -j RETURN",
        spec.proxy_uid
    ));
    body.rule(format!(
        "-A {OUTPUT} -m owner --gid-owner {} -j RETURN",
        spec.proxy_gid
    ));
    body.comment("Traffic inside the pod (loopback) is not captured.");
    body.rule(format!("-A {OUTPUT} -o lo -j RETURN"));
    let loopback = match family {
        Family::V4 => "127.0.0.0/8",
        Family::V6 => "::1/128",
    };
    body.rule(format!("-A {OUTPUT} -d {loopback} -j RETURN"));
    for ports in multiport_chunks(&spec.exclude_outbound_ports) {
        body.rule(format!(
            "-A {OUTPUT} -p tcp -m multiport --dports {ports} -j RETURN"
        ));
    }
    let cidrs = spec
        .exclude_outbound_cidrs
        .iter()
        .filter(|net| net.addr().is_ipv4() == (family == Family::V4));
    for cidr in cidrs {
        body.rule(format!("-A {OUTPUT} -d {cidr} -j RETURN"));
    }
    body.rule(format!("-A {OUTPUT} -p tcp -j {REDIRECT}"));
    body.rule(format!("-A OUTPUT -p tcp -j {OUTPUT}"));
}

/// Given `iptables-save -t nat` output, the lines that remove everything
/// Portcullis put there: the jumps from built-in chains (`-D`), then our
/// chains flushed (`-F`) and deleted (`-X`). Flushing all before deleting
/// any matters, because our chains jump to each other.
pub(crate) fn cleanup_lines(save: &str) -> Vec<String> {
    let mut jumps = Vec::new();
    let mut chains = Vec::new();
    let mut in_nat = false;
    for line in save.lines().map(str::trim) {
        match line {
            "*nat" => in_nat = true,
            "COMMIT" => in_nat = false,
            _ if !in_nat => {}
            _ => {
                if let Some(name) = line.strip_prefix(':').and_then(|l| l.split(' ').next()) {
                    if name.starts_with(PREFIX) {
                        chains.push(name.to_string());
                    }
                } else if let Some(rule) = jump_into_ours(line) {
                    jumps.push(format!("-D {rule}"));
                }
            }
        }
    }
    let flush = chains.iter().map(|c| format!("-F {c}"));
    let delete = chains.iter().map(|c| format!("-X {c}"));
    jumps.into_iter().chain(flush).chain(delete).collect()
}

/// For `-A CHAIN ... -j PORTCULLIS_X` with CHAIN not ours, the part after `-A `.
fn jump_into_ours(line: &str) -> Option<&str> {
    let rule = line.strip_prefix("-A ")?;
    let tokens: Vec<&str> = rule.split_whitespace().collect();
    let chain = tokens.first()?;
    let jumps = tokens
        .windows(2)
        .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1].starts_with(PREFIX));
    (!chain.starts_with(PREFIX) && jumps).then_some(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVE: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:PORTCULLIS_INBOUND - [0:0]
:PORTCULLIS_IN_REDIRECT - [0:0]
:PORTCULLIS_OUTPUT - [0:0]
:CNI_HOSTPORT - [0:0]
-A PREROUTING -p tcp -j PORTCULLIS_INBOUND
-A PREROUTING -j CNI_HOSTPORT
-A OUTPUT -p tcp -j PORTCULLIS_OUTPUT
-A PORTCULLIS_INBOUND -p tcp -j PORTCULLIS_IN_REDIRECT
-A PORTCULLIS_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15106
COMMIT
*filter
:FORWARD ACCEPT [0:0]
-A FORWARD -j PORTCULLIS_ELSEWHERE
COMMIT
";

    #[test]
    fn cleanup_removes_only_ours_from_nat() {
        assert_eq!(
            cleanup_lines(SAVE),
            [
                "-D PREROUTING -p tcp -j PORTCULLIS_INBOUND",
                "-D OUTPUT -p tcp -j PORTCULLIS_OUTPUT",
                "-F PORTCULLIS_INBOUND",
                "-F PORTCULLIS_IN_REDIRECT",
                "-F PORTCULLIS_OUTPUT",
                "-X PORTCULLIS_INBOUND",
                "-X PORTCULLIS_IN_REDIRECT",
                "-X PORTCULLIS_OUTPUT",
            ]
        );
    }

    #[test]
    fn cleanup_of_a_clean_table_is_empty() {
        let clean = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j CNI_HOSTPORT\nCOMMIT\n";
        assert!(cleanup_lines(clean).is_empty());
        assert!(cleanup_lines("").is_empty());
    }

    #[test]
    fn transaction_puts_cleanup_before_the_body() {
        let text = transaction("# h\n", &["-F A".into()], &[":A - [0:0]".into()]);
        assert_eq!(text, "# h\n*nat\n-F A\n:A - [0:0]\nCOMMIT\n");
    }
}
