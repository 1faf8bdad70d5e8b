//! Stand-alone `portcullis capture`, for tests and for init images that do
//! not carry the whole proxy.
#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use portcullis_capture::{run, CaptureArgs};

#[derive(Parser)]
#[command(
    name = "portcullis-capture",
    version,
    about = "Install the nat rules that send a pod's TCP connections to the Portcullis sidecar"
)]
struct Cli {
    #[command(flatten)]
    args: CaptureArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match run(&cli.args, &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = stdout.flush();
            eprintln!("portcullis-capture: {err}");
            ExitCode::FAILURE
        }
    }
}
