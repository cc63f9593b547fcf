//! Integration tests: the real `smart-cctv` binary and library, as users and
//! systemd run them. One test crate, several modules, to keep link time down.
//!
//! The harness is libtest-mimic, so that a test whose needs are missing on
//! this machine (see `fixtures.rs`) shows as ignored, with the reason, in the
//! runner's own count, and never passes by returning early.

mod alerts;
mod broker;
mod cameras;
mod cluster;
mod config_validate;
mod detect;
mod faults;
mod fixtures;
mod health;
mod models;
mod motion;
mod mqtt;
mod ops_files;
mod service;
mod speakers;
mod store;
mod support;
mod testbed;
mod web;

use fixtures::Need;
use libtest_mimic::{Arguments, Trial};

/// Registers a module's tests: `tests![name, other needs [Need, ...], ...]`.
#[macro_export]
macro_rules! tests {
    ($($name:ident $(needs [$($need:ident),* $(,)?])?),* $(,)?) => {
        pub fn tests() -> Vec<$crate::Registered> {
            let module = module_path!().trim_start_matches("integration::");
            vec![$($crate::Registered {
                name: format!("{module}::{}", stringify!($name)),
                needs: vec![$($($crate::fixtures::Need::$need),*)?],
                run: $name,
            }),*]
        }
    };
}

/// One test as a module lists it.
pub struct Registered {
    pub name: String,
    pub needs: Vec<Need>,
    pub run: fn(),
}

fn main() -> std::process::ExitCode {
    let args = Arguments::from_args();
    let modules = [
        alerts::tests,
        cameras::tests,
        cluster::tests,
        config_validate::tests,
        detect::tests,
        faults::tests,
        health::tests,
        models::tests,
        motion::tests,
        mqtt::tests,
        ops_files::tests,
        service::tests,
        speakers::tests,
        store::tests,
        web::tests,
    ];
    let mut ignored = Vec::new();
    let mut trials = Vec::new();
    for test in modules.iter().flat_map(|tests| tests()) {
        let unmet: Vec<Need> = test.needs.iter().copied().filter(|n| n.missing().is_some()).collect();
        let missing: Vec<String> = unmet.iter().filter_map(|n| n.missing()).collect();
        let run = test.run;
        let trial = Trial::test(test.name.clone(), move || {
            run();
            Ok(())
        });
        if missing.is_empty() {
            trials.push(trial);
        } else {
            let reason = missing.join("; ");
            ignored.push((test.name, reason.clone()));
            let labels: Vec<&str> = unmet.iter().map(|n| n.label()).collect();
            trials.push(trial.with_ignored_flag(true).with_kind(labels.join(", ")));
        }
    }
    // CI has everything: a missing fixture there is a broken machine, not a skip.
    if std::env::var("CI").is_ok_and(|v| v == "true") && !ignored.is_empty() && !args.list {
        eprintln!("CI=true, yet {} tests cannot run here:", ignored.len());
        for (name, why) in &ignored {
            eprintln!("  {name}: {why}");
        }
        return std::process::ExitCode::FAILURE;
    }
    if !ignored.is_empty() && !args.list {
        println!("ignored for what this machine lacks ({}):", ignored.len());
        for (name, why) in &ignored {
            println!("  {name}: {why}");
        }
    }
    let _ = std::fs::remove_dir_all(support::leak_check_dir());
    let conclusion = libtest_mimic::run(&args, trials);
    // One check over everything every service printed or answered in this
    // run: no test password anywhere.
    let leaks = support::leaked_secrets();
    if !args.list && !leaks.is_empty() {
        for (file, secret) in &leaks {
            eprintln!(
                "a test password (`{secret}`) leaked into what a service printed or answered: {}",
                file.display()
            );
        }
        return std::process::ExitCode::FAILURE;
    }
    if !args.list {
        let checked = std::fs::read_dir(support::leak_check_dir()).map_or(0, |d| d.count());
        println!("leak check: no test password in the output or answers of {checked} service runs");
    }
    conclusion.exit_code()
}
