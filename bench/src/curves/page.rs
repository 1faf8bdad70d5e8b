//! The curves' outputs: CURVES.md (tables and notes), curves.json (every
//! point) and one PNG per curve.

use std::fmt::Write as _;
use std::path::Path;

use crate::chart::{self, Panel, Series, XScale};
use crate::machine::Machine;

use super::{Curve, Curves, Point};

/// How each curve is titled, its x axis and its columns.
struct Layout {
    key: &'static str,
    title: &'static str,
    x_desc: &'static str,
    x_head: &'static str,
    scale: XScale,
}

const LAYOUTS: [Layout; 5] = [
    Layout {
        key: "args",
        title: "CPU per call and p99 against argument size",
        x_desc: "echo text argument, bytes",
        x_head: "text",
        scale: XScale::Log,
    },
    Layout {
        key: "filters",
        title: "CPU per call and p99 against filters in the chain",
        x_desc: "WASM filters (tool-rbac × n)",
        x_head: "filters",
        scale: XScale::Linear,
    },
    Layout {
        key: "list",
        title: "tools/list: CPU per call and p99 against list size",
        x_desc: "tools in the upstream's list",
        x_head: "tools",
        scale: XScale::Log,
    },
    Layout {
        key: "connections",
        title: "CPU per call and p99 against closed-loop connections",
        x_desc: "connections",
        x_head: "connections",
        scale: XScale::Log,
    },
    Layout {
        key: "callers",
        title: "Warm-instance pool: distinct callers through configuration d",
        x_desc: "distinct SPIFFE IDs",
        x_head: "callers",
        scale: XScale::Log,
    },
];

fn layout(key: &str) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.key == key)
}

/// Writes CURVES.md, curves.json and curve-KEY.png into `out`.
pub fn write(out: &Path, curves: &Curves, machine: &Machine) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    for c in &curves.curves {
        if let Some(l) = layout(c.key) {
            chart::curve(
                &out.join(format!("curve-{}.png", c.key)),
                l.title,
                l.x_desc,
                l.scale,
                &panels(c),
            )?;
        }
    }
    std::fs::write(out.join("CURVES.md"), markdown(curves, machine))?;
    let json = serde_json::json!({ "machine": machine, "curves": curves });
    std::fs::write(
        out.join("curves.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

fn series_of(c: &Curve) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for p in &c.points {
        if !names.contains(&p.series.as_str()) {
            names.push(&p.series);
        }
    }
    names
}

fn line(c: &Curve, name: &str, f: impl Fn(&Point) -> Option<f64>) -> Series {
    Series {
        label: name.to_string(),
        points: c
            .points
            .iter()
            .filter(|p| p.series == name)
            .filter_map(|p| Some((p.x, f(p)?)))
            .collect(),
    }
}

fn panels(c: &Curve) -> Vec<Panel> {
    let names = series_of(c);
    let mut out = vec![
        Panel {
            y_desc: "proxy CPU µs per call".into(),
            series: names
                .iter()
                .map(|n| line(c, n, |p| p.cpu_us_per_call))
                .collect(),
        },
        Panel {
            y_desc: "p99 ms".into(),
            series: names
                .iter()
                .map(|n| line(c, n, |p| Some(p.p99_us as f64 / 1000.0)))
                .collect(),
        },
    ];
    let filters: Vec<String> = {
        let mut f: Vec<String> = c
            .points
            .iter()
            .flat_map(|p| p.hit_rate.keys().cloned())
            .collect();
        f.sort();
        f.dedup();
        f
    };
    if !filters.is_empty() {
        out.push(Panel {
            y_desc: "warm-instance hit rate % (counted)".into(),
            series: filters
                .iter()
                .map(|f| {
                    let mut s = line(c, names.first().copied().unwrap_or(""), |p| {
                        p.hit_rate.get(f).map(|h| h * 100.0)
                    });
                    s.label = f.clone();
                    s
                })
                .collect(),
        });
    }
    out
}

/// "tool-rbac 2.1, arg-guard 40.3"; a long chain as its mean.
fn evaluation_cell(p: &Point) -> String {
    let f = &p.filter_us;
    match f.len() {
        0 => "–".into(),
        1 | 2 => f
            .iter()
            .map(|(n, us)| format!("{n} {us:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        n => format!("mean of {n}: {:.1}", f.values().sum::<f64>() / n as f64),
    }
}

fn size(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.0} MB", x / 1e6),
        x if x >= 1e3 => format!("{:.0} KB", x / 1e3),
        x => format!("{x:.0} B"),
    }
}

fn markdown(curves: &Curves, m: &Machine) -> String {
    let s = &curves.settings;
    let mut md = format!(
        "# Scaling curves\n\n\
         Written by `make bench-curves` (`portcullis-bench curves`); how each curve is taken is in \
         `bench/README.md` (*Scaling curves*). Every point: {:.1} s warm-up at the same load, then \
         one measured run of {:.1} s. Raw points: `curves.json`.\n\n\
         - **Date:** {}\n- **Machine:** {} ({} cores, {} RAM), Linux {}\n- **portcullis:** {}\n\
         - **Proxy CPU** is user + system CPU of the proxy process (all threads, from \
         `/proc/PID/stat`) per answered call, in µs. The load generator (2 threads) and the \
         upstream share the machine with it.\n\
         - **Noise:** one run per point on a shared 2-core VM: reruns differ by up to about ±20 %. \
         Read the shapes and the orders of magnitude, not a few percent. *Host steal* is the share \
         of the time the vCPUs wanted to run that the hypervisor gave to other guests during the \
         point's run (`/proc/stat`): a point with more than a few percent cost more than it would on a quiet \
         host.\n\
         - **µs per filter evaluation** is the mean of the proxy's own \
         `portcullis_filter_duration_seconds` over the measured run: wall-clock time of one \
         evaluation (instantiation included), so under CPU contention it can exceed the CPU per call. \
         Where tool-rbac runs as shipped (argument size, lists), almost every request is answered \
         with a decision reused for an equal call, and its figure is that.\n",
        s.warmup.as_secs_f64(),
        s.duration.as_secs_f64(),
        m.date,
        m.cpu,
        m.cores,
        m.memory,
        m.kernel,
        m.portcullis,
    );
    if s.smoke {
        md.push_str("- **Smoke run:** debug build, a fraction of a second per point: these figures mean nothing.\n");
    }
    for c in &curves.curves {
        let Some(l) = layout(c.key) else { continue };
        let _ = write!(
            md,
            "\n## {}\n\n![{}](curve-{}.png)\n\n",
            l.title, l.title, c.key
        );
        let hits = c.points.iter().any(|p| !p.hit_rate.is_empty());
        let evals = c.points.iter().any(|p| !p.filter_us.is_empty());
        let _ = write!(
            md,
            "| {} | series | calls/s | proxy CPU µs/call | p50 ms | p99 ms | errors | host steal % |",
            l.x_head
        );
        if hits {
            md.push_str(" hit rate tool-rbac | hit rate arg-guard |");
        }
        if evals {
            md.push_str(" µs per filter evaluation |");
        }
        md.push_str("\n|---:|---|---:|---:|---:|---:|---:|---:|");
        if hits {
            md.push_str("---:|---:|");
        }
        if evals {
            md.push_str("---|");
        }
        md.push('\n');
        for p in &c.points {
            let x = if c.key == "args" {
                size(p.x)
            } else {
                format!("{:.0}", p.x)
            };
            let _ = write!(
                md,
                "| {x} | {} | {:.0} | {} | {:.3} | {:.3} | {} | {} |",
                p.series,
                p.rps,
                p.cpu_us_per_call.map_or("–".into(), |v| format!("{v:.1}")),
                p.p50_us as f64 / 1000.0,
                p.p99_us as f64 / 1000.0,
                p.errors,
                p.host_steal
                    .map_or("–".into(), |v| format!("{:.1}", v * 100.0))
            );
            if hits {
                for f in ["tool-rbac", "arg-guard"] {
                    let _ = write!(
                        md,
                        " {} |",
                        p.hit_rate
                            .get(f)
                            .map_or("–".into(), |h| format!("{:.0} %", h * 100.0))
                    );
                }
            }
            if evals {
                let _ = write!(md, " {} |", evaluation_cell(p));
            }
            md.push('\n');
        }
        if let Some(v) = c.derived.get("cpu_us_per_filter") {
            let _ = write!(
                md,
                "\n**Per filter (fitted over every point):** {v:.1} µs of proxy CPU per call per \
                 filter"
            );
            if let Some(p50) = c.derived.get("p50_us_per_filter") {
                let _ = write!(md, "; p50 grows {p50:.1} µs per filter");
            }
            md.push('.');
            if let (Some(first), Some(added)) = (
                c.derived.get("cpu_us_first_filter"),
                c.derived.get("cpu_us_per_added_filter"),
            ) {
                let _ = write!(
                    md,
                    " The first filter adds {first:.1} µs (it also brings the chain's fixed \
                     costs); each further one {added:.1} µs (fitted over 1 filter and more)."
                );
            }
            md.push('\n');
        }
        md.push('\n');
        for n in &c.notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    if !curves.idle.is_empty() {
        md.push_str(
            "\n## Memory per idle connection\n\n\
             | series | connections held | proxy fds added | RSS before MiB | RSS held MiB | KiB per connection | RSS after closing MiB | fds left after closing |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for i in &curves.idle {
            let _ = writeln!(
                md,
                "| {} | {} of {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
                i.series,
                i.held,
                i.asked,
                i.proxy_fds_added,
                i.rss_before_mib,
                i.rss_held_mib,
                i.kib_per_connection,
                i.rss_after_close_mib,
                i.proxy_fds_left_after_close
            );
        }
        let _ = writeln!(
            md,
            "\n- Each connection was opened by the load generator, served one `echo` call (so the \
             TLS handshake is complete and the connection is an idle keep-alive one), then left \
             open; RSS is `VmRSS` of the proxy 1 s after the last one was opened, against a \
             baseline taken after a short warm-up. Each series has a fresh proxy of its own, with \
             `listener.max_connections` and `max_connections_per_caller` raised (one caller holds \
             them all). Open-file limit in effect: {}.\n\
             - *RSS after closing* (1 s after the load generator closed its ends) shows what the \
             allocator kept; *fds left* that the proxy did close them. The proxy fds added beyond \
             the connections are its upstream pool (up to 64 calls were in flight while opening).",
            curves.nofile_limit
        );
    }
    md
}
