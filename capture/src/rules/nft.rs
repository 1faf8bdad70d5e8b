//! `nft -f` text: one transaction, our own `inet` table covering both families.

use std::fmt::Write as _;

use ipnet::IpNet;

use crate::spec::{join, ValidSpec};

/// `add` then `delete` removes the table whether or not it exists (nft 1.0.6
/// has no `destroy`); a table definition after them starts it afresh. All of
/// it is one transaction, so a re-run is atomic and gives the same table.
pub(crate) const CLEAN: &str = "add table inet portcullis\ndelete table inet portcullis\n";

pub(crate) fn render(spec: &ValidSpec) -> String {
    let families = match (spec.ipv4, spec.ipv6) {
        (true, true) => "IPv4+IPv6",
        (true, false) => "IPv4",
        _ => "IPv6",
    };
    let mut out = format!(
        "# Portcullis capture rules: mode {}, {families}.\n",
        spec.mode
    );
    out.push_str(CLEAN);
    if !spec.mode.captures_inbound() {
        return out;
    }
    out.push_str("table inet portcullis {\n");
    inbound(spec, &mut out);
    if spec.mode.captures_outbound() {
        outbound(spec, &mut out);
    }
    out.push_str("}\n");
    out
}

/// The match that restricts a base chain to the enabled families; an `inet`
/// table sees both otherwise.
fn family_match(spec: &ValidSpec) -> &'static str {
    match (spec.ipv4, spec.ipv6) {
        (true, true) => "",
        (true, false) => "meta nfproto ipv4 ",
        _ => "meta nfproto ipv6 ",
    }
}

/// A base chain that jumps to `target` for TCP. The numeric priority is on
/// purpose: nft 1.0.6 refuses `priority dstnat` on the output hook.
fn base_chain(out: &mut String, name: &str, hook: &str, target: &str, fam: &str) {
    let _ = write!(
        out,
        "\tchain {name} {{\n\
         \t\ttype nat hook {hook} priority -100; policy accept;\n\
         \t\t{fam}meta l4proto tcp jump {target}\n\
         \t}}\n"
    );
}

fn port_set(ports: &[u16]) -> String {
    join(ports).replace(',', ", ")
}

fn inbound(spec: &ValidSpec, out: &mut String) {
    let _ = writeln!(
        out,
        "\t# Inbound: every TCP connection into the pod goes to the capture port {}, except the\n\
         \t# sidecar's own ports and excluded ports. The canary port {} is captured on purpose.",
        spec.inbound_port, spec.canary_port
    );
    base_chain(
        out,
        "prerouting",
        "prerouting",
        "inbound",
        family_match(spec),
    );
    out.push_str("\tchain inbound {\n");
    for ports in [&spec.proxy_ports, &spec.exclude_inbound_ports] {
        if !ports.is_empty() {
            let _ = writeln!(
                out,
                "\t\ttcp dport {{ {} }} counter return",
                port_set(ports)
            );
        }
    }
    let _ = writeln!(
        out,
        "\t\tmeta l4proto tcp counter redirect to :{}\n\t}}",
        spec.inbound_port
    );
}

fn outbound(spec: &ValidSpec, out: &mut String) {
    let _ = writeln!(
        out,
        "\t# Outbound: the pod's own TCP connections go to the capture port {}. The sidecar's own\n\
         \t# connections (uid {} / gid {}) are never re-captured: without that exemption it would\n\
         \t# loop into itself.",
        spec.outbound_port, spec.proxy_uid, spec.proxy_gid
    );
    base_chain(out, "output", "output", "outbound", family_match(spec));
    out.push_str("\tchain outbound {\n");
    let _ = writeln!(out, "\t\tmeta skuid {} counter return", spec.proxy_uid);
    let _ = writeln!(out, "\t\tmeta skgid {} counter return", spec.proxy_gid);
    out.push_str("\t\t# Traffic inside the pod (loopback) is not captured.\n");
    out.push_str("\t\toifname \"lo\" counter return\n");
    if spec.ipv4 {
        out.push_str("\t\tip daddr 127.0.0.0/8 counter return\n");
    }
    if spec.ipv6 {
        out.push_str("\t\tip6 daddr ::1 counter return\n");
    }
    if !spec.exclude_outbound_ports.is_empty() {
        let ports = port_set(&spec.exclude_outbound_ports);
        let _ = writeln!(out, "\t\ttcp dport {{ {ports} }} counter return");
    }
    let (v4, v6): (Vec<IpNet>, Vec<IpNet>) = spec
        .exclude_outbound_cidrs
        .iter()
        .copied()
        .partition(|net| net.addr().is_ipv4());
    for (proto, nets) in [("ip", v4), ("ip6", v6)] {
        if !nets.is_empty() {
            let set = join(&nets).replace(',', ", ");
            let _ = writeln!(out, "\t\t{proto} daddr {{ {set} }} counter return");
        }
    }
    let _ = writeln!(
        out,
        "\t\tmeta l4proto tcp counter redirect to :{}\n\t}}",
        spec.outbound_port
    );
}
