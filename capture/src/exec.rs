//! Running the firewall tools. Behind a trait so that the apply and
//! detection logic can be tested without root or the tools installed.

use std::io::{self, Write};
use std::process::{Command, Stdio};

/// Failure to run one of the firewall tools.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

/// Runs a program to completion.
pub trait Exec {
    /// Runs `program args`, with `stdin` fed to it when given, and returns
    /// its standard output if it exits with status 0.
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ExecError>;
}

/// The real system, through `std::process::Command`.
#[derive(Clone, Copy, Debug, Default)]
pub struct System;

impl Exec for System {
    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, ExecError> {
        let spawn_err = |source| ExecError::Spawn {
            program: program.to_string(),
            source,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // The tools read all their input before writing much, so writing
            // first and then collecting the output cannot deadlock. Dropping
            // the pipe closes it, which ends the transaction's input.
            pipe.write_all(text.as_bytes()).map_err(spawn_err)?;
        }
        let output = child.wait_with_output().map_err(spawn_err)?;
        if !output.status.success() {
            return Err(ExecError::Failed {
                program: format!("{program} {}", args.join(" "))
                    .trim_end()
                    .to_string(),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}
