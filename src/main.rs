//! The `smart-cctv` binary: parse arguments, run the command, exit with its code.

use clap::Parser;
use smart_cctv::cmds::{Cli, dispatch};

fn main() {
    tune_allocator();
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

/// glibc's allocator, left as it is, let a month-long run creep: with a
/// heap arena per busy thread (up to 8 per core) and an mmap threshold that
/// rises to the size of every large block freed, the ~1 MB frames and
/// activations churned every frame fragment many arenas that are never
/// given back (the soak measured +3 to +10 % RSS in 30 minutes). Two arenas
/// and a fixed threshold, so large blocks are mapped and unmapped whole,
/// keep it flatter, and the `resources` actor hands free pages back every
/// minute (`malloc_trim`; README "Soak"). `MALLOC_ARENA_MAX` and
/// `MALLOC_MMAP_THRESHOLD_` in the environment still win.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: mallopt only sets allocator parameters; called before
            // any other thread exists.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024) };
        }
    }
}
