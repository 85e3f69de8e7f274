//! `kiln selftest`: run the testkit's parity case tables on every backend this
//! machine has, so a user can check their own machine.

use anyhow::{bail, Result};
use clap::Args;

#[derive(Args)]
pub struct SelftestArgs {
    /// Threads for the CPU backend (0 = all cores).
    #[arg(short = 't', long = "threads", default_value_t = 0)]
    pub threads: usize,
}

pub fn run(a: SelftestArgs) -> Result<()> {
    let (passed, failed) = kiln_testkit_cli::run_cpu(a.threads)?;
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} parity cases failed");
    }
    Ok(())
}

/// Placeholder module name until the testkit drivers are wired (see below).
mod kiln_testkit_cli {
    pub fn run_cpu(_threads: usize) -> anyhow::Result<(usize, usize)> {
        anyhow::bail!("selftest is not wired yet")
    }
}
