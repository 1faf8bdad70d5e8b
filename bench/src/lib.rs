//! The benchmark harness's parts, as a library: the load generator, the
//! upstream MCP server, the bare forwarder (configuration h), the
//! configurations and their PKI, /proc readers, charts and the scaling
//! curves. `portcullis-bench` (src/main.rs) and the soak test
//! (`soak/`, `portcullis-soak`) are both built on them.

pub mod chart;
pub mod conn;
pub mod curves;
pub mod forward;
pub mod load;
pub mod machine;
pub mod plan;
pub mod pool;
pub mod probe;
pub mod procstat;
pub mod report;
pub mod scrape;
pub mod targets;
pub mod upstream;
pub mod verify;
