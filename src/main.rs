//! The `smart-cctv` binary: parse arguments, run the command, exit with its code.

use clap::Parser;
use smart_cctv::cmds::{Cli, dispatch};

fn main() {
    let cli = Cli::parse();
    let code = match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("smart-cctv: {e:#}");
            1
        }
    };
    std::process::exit(code);
}
