//! RESULTS.md: the summary as a page.

use std::fmt::Write;

use super::{Applied, Range, Summary};

fn minutes(s: f64) -> String {
    if s >= 60.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{s:.0} s")
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:+.digits$}"))
}

pub fn markdown(s: &Summary) -> String {
    let mut md = String::new();
    let m = &s.machine;
    let verdict = if s.failures.is_empty() {
        "**PASS**".to_string()
    } else {
        format!("**FAIL**: {}", s.failures.join("; "))
    };
    let _ = write!(
        md,
        "# Soak results\n\n\
         Written by `make soak` (`portcullis-soak run`); see `soak/README.md` for what is done \
         and how to read this. Raw data: `results.json`; chart: `soak.png`.\n\n\
         - **Verdict:** {verdict}\n\
         - **Date:** {}\n- **Machine:** {} ({} cores, {} RAM), Linux {}\n\
         - **portcullis:** {}; tree `{}`\n\
         - **Run:** {} at {:.0} calls/s (open loop) over {} mTLS connections, through \
         portcullis with two WASM filters (bench configuration d)\n\
         - **During the run:** filter reload every {}, SVID rotation every {}, upstream restart \
         every {} (down {:.1} s; errors up to {:.0} s after it listens again count as inside)\n\n\
         ![RSS, fds and p99 over time](soak.png)\n\n",
        m.date,
        m.cpu,
        m.cores,
        m.memory,
        m.kernel,
        m.portcullis,
        s.commit,
        minutes(s.duration_s),
        s.rate,
        s.connections,
        minutes(s.intervals_s["reload"]),
        minutes(s.intervals_s["rotation"]),
        minutes(s.intervals_s["restart"]),
        s.intervals_s["restart_downtime"],
        s.intervals_s["restart_grace"],
    );
    calls(&mut md, s);
    changes(&mut md, s);
    resources(&mut md, s);
    windows(&mut md, s);
    md
}

fn calls(md: &mut String, s: &Summary) {
    let _ = write!(
        md,
        "## Calls\n\n{} calls, {} answered, {} errors inside restart windows, \
         **{} outside**.\n\n",
        s.calls, s.ok, s.errors_inside_restarts, s.errors_outside_restarts
    );
    if s.errors.is_empty() {
        return;
    }
    md.push_str("| class | inside a restart window | calls | example |\n|---|---|---:|---|\n");
    for e in &s.errors {
        let example = e
            .examples
            .first()
            .map(|x| x.replace('|', "\\|").chars().take(120).collect::<String>())
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {} | `{}` |",
            e.class,
            if e.inside_restart { "yes" } else { "**no**" },
            e.count,
            example
        );
    }
    md.push('\n');
}

fn changes(md: &mut String, s: &Summary) {
    md.push_str(
        "## Changes made under load\n\n\
         Applied = seen taking effect: a reload by the proxy's \
         `portcullis_filter_reloads_total{result=\"success\"}`, a rotation by a fresh TLS \
         handshake being served the new certificate, a restart by the new upstream listening.\n\n\
         | change | made | applied | median time to apply | max |\n|---|---:|---:|---:|---:|\n",
    );
    let row = |md: &mut String, what: &str, a: &Applied| {
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {:.0} ms | {:.0} ms |",
            a.attempted, a.applied, a.median_ms, a.max_ms
        );
    };
    row(md, "filter reload", &s.reloads);
    row(md, "SVID rotation", &s.rotations);
    row(md, "upstream restart", &s.restarts);
    md.push('\n');
}

fn resources(md: &mut String, s: &Summary) {
    let _ = write!(
        md,
        "## Proxy memory and file descriptors\n\n\
         Read from `/proc/PID/status` (VmRSS) and `/proc/PID/fd`. Slopes are least-squares \
         fits per hour; \"after warm-up\" leaves out the first {}. Verdict: {}. \
         Proxy running at the end: {}.\n\n\
         | | start | end | max | slope / h | slope / h after warm-up |\n|---|---:|---:|---:|---:|---:|\n",
        minutes(s.warmup_s),
        s.leak_verdict,
        if s.proxy_alive { "yes" } else { "**no**" }
    );
    let row = |md: &mut String, what: &str, r: &Option<Range>, d: usize| {
        if let Some(r) = r {
            let _ = writeln!(
                md,
                "| {what} | {:.d$} | {:.d$} | {:.d$} | {} | {} |",
                r.start,
                r.end,
                r.max,
                opt(r.slope_per_h, d + 1),
                opt(r.slope_per_h_after_warmup, d + 1)
            );
        }
    };
    row(md, "RSS (MiB)", &s.rss_mib, 1);
    row(md, "open fds", &s.fds, 0);
    md.push('\n');
}

fn windows(md: &mut String, s: &Summary) {
    md.push_str(
        "## Latency per window\n\n\
         Latency counts from when each call was due (open loop), answered calls only; a \
         window holds the calls due in it.\n\n\
         | window | answered | errors | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for w in &s.windows {
        let _ = writeln!(
            md,
            "| {}–{} | {} | {} | {:.2} | {:.2} | {:.1} |",
            minutes_s(w.start_s),
            minutes_s(w.end_s),
            w.ok,
            w.errors,
            w.p50_ms,
            w.p99_ms,
            w.max_ms
        );
    }
}

/// A window edge as m:ss.
fn minutes_s(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}
