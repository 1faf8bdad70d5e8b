//! Golden files for the generated rules: every mode, both backends.
//!
//! `UPDATE_GOLDEN=1 cargo test -p portcullis-capture --test golden` rewrites
//! them; review the diff before committing. Without it the test compares
//! text, and also fails on a golden file no case produces (a stale golden
//! would otherwise keep "passing" while testing nothing).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use portcullis_capture::spec::parse_cidrs;
use portcullis_capture::{rules, Backend, CaptureSpec, Mode};

fn cases() -> Vec<(&'static str, CaptureSpec)> {
    let base = CaptureSpec::default;
    vec![
        ("inbound-default", base()),
        (
            "inbound-exclude",
            CaptureSpec {
                exclude_inbound_ports: vec![9091, 9090, 8081],
                ..base()
            },
        ),
        (
            "inbound-ipv4-only",
            CaptureSpec {
                ipv6: false,
                exclude_inbound_ports: vec![9090],
                ..base()
            },
        ),
        (
            "inbound-custom-ports",
            CaptureSpec {
                inbound_port: 16106,
                canary_port: 16122,
                proxy_ports: vec![16120, 16121],
                ipv4: false,
                ..base()
            },
        ),
        (
            "outbound-default",
            CaptureSpec {
                mode: Mode::InboundOutbound,
                ..base()
            },
        ),
        (
            "outbound-excludes",
            CaptureSpec {
                mode: Mode::InboundOutbound,
                // 20 ports: more than one multiport rule holds (15).
                exclude_outbound_ports: (5400..5420).collect(),
                exclude_outbound_cidrs: parse_cidrs(
                    "10.96.0.0/12,fd00:10:96::/112,169.254.169.254",
                )
                .unwrap(),
                exclude_inbound_ports: vec![9090],
                proxy_uid: 2000,
                proxy_gid: 3000,
                ..base()
            },
        ),
        (
            "none",
            CaptureSpec {
                mode: Mode::None,
                ..base()
            },
        ),
    ]
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn rules_match_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = golden_dir();
    let mut expected = BTreeSet::new();
    let mut mismatches = Vec::new();
    for (name, spec) in cases() {
        let spec = spec.validate().unwrap();
        for backend in [Backend::Iptables, Backend::Nft] {
            for script in rules(&spec, backend) {
                let file = format!("{name}.{}", script.program.golden_ext());
                let path = dir.join(&file);
                expected.insert(file.clone());
                if update {
                    std::fs::write(&path, &script.text).unwrap();
                    continue;
                }
                let want = std::fs::read_to_string(&path).unwrap_or_default();
                if want != script.text {
                    mismatches.push(format!(
                        "--- {file} (golden)\n{want}+++ generated\n{}",
                        script.text
                    ));
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden file(s) differ; rerun with UPDATE_GOLDEN=1 if the change is intended:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let stale: Vec<_> = present.difference(&expected).collect();
    assert!(
        stale.is_empty(),
        "stale golden files (no case makes them): {stale:?}"
    );
}

/// The goldens are only worth their name if they say what the brief says;
/// these checks read the generated text for the facts that matter most.
#[test]
fn key_facts_of_the_rules() {
    let spec = CaptureSpec {
        mode: Mode::InboundOutbound,
        exclude_outbound_ports: (1..=20).collect(),
        ..CaptureSpec::default()
    }
    .validate()
    .unwrap();
    let ipt = &rules(&spec, Backend::Iptables)[0].text;
    assert_eq!(ipt.matches("COMMIT").count(), 1);
    assert!(ipt.contains("-A PORTCULLIS_OUTPUT -m owner --uid-owner 1338 -j RETURN"));
    // The owner exemption comes before the redirect, or it exempts nothing.
    let owner = ipt.find("--uid-owner").unwrap();
    let redirect = ipt
        .find("-A PORTCULLIS_OUTPUT -p tcp -j PORTCULLIS_REDIRECT")
        .unwrap();
    assert!(owner < redirect);
    for line in ipt.lines().filter(|l| l.contains("--dports")) {
        let n = line
            .split("--dports ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .split(',')
            .count();
        assert!(n <= 15, "multiport takes at most 15 ports: {line}");
    }
    let nft = &rules(&spec, Backend::Nft)[0].text;
    assert_eq!(nft.matches("priority -100;").count(), 2);
    assert!(nft.starts_with("# Portcullis") && nft.contains("\nadd table inet portcullis\ndelete table inet portcullis\ntable inet portcullis {\n"));
    let none = CaptureSpec {
        mode: Mode::None,
        ..CaptureSpec::default()
    }
    .validate()
    .unwrap();
    assert!(!rules(&none, Backend::Nft)[0].text.contains("redirect"));
    assert!(!rules(&none, Backend::Iptables)[0].text.contains("REDIRECT"));
}
