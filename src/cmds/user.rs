//! `smart-cctv user add|passwd|remove|list|token`: the people who may use
//! the web page and the API (`data/users.json`, see [`crate::web::users`]).
//! The running service reads the file again when it changes.

use super::Cli;
use crate::web::users::UsersFile;
use anyhow::Context;
use clap::Subcommand;
use std::io::{BufRead, IsTerminal};

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user; the password is asked for (or read from stdin when it is not a terminal)
    Add { name: String },
    /// Set a user's password
    Passwd { name: String },
    /// Remove a user: their sessions and tokens stop working at once
    Remove { name: String },
    /// List the users
    List,
    /// Make an API token for a user (`Authorization: Bearer TOKEN`); shown once
    Token { name: String },
}

/// The new password: asked twice on a terminal, else the first line of stdin.
fn read_password(name: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("password for {name}: "))?;
        let again = rpassword::prompt_password("again: ")?;
        anyhow::ensure!(first == again, "the two passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub fn run(cli: &Cli, command: &UserCommand) -> anyhow::Result<i32> {
    let config = crate::config::load(cli.config_path().as_deref())?.config;
    let data_dir = cli.data_dir.clone().unwrap_or(config.storage.data_dir.clone());
    let path = UsersFile::path(&data_dir);
    let mut users = UsersFile::load(&path)?;
    match command {
        UserCommand::Add { name } => {
            crate::web::users::check_name(name)?;
            let password = read_password(name)?;
            users.add(name, &password)?;
            users.save(&path)?;
            println!("added {name}; log in at http://{}/", config.http.listen);
        }
        UserCommand::Passwd { name } => {
            anyhow::ensure!(users.exists(name), "no user {name}");
            let password = read_password(name)?;
            users.set_password(name, &password)?;
            users.save(&path)?;
            println!("password of {name} changed");
        }
        UserCommand::Remove { name } => {
            users.remove(name)?;
            users.save(&path)?;
            println!("removed {name}");
        }
        UserCommand::List => {
            for user in &users.users {
                println!("{}  ({} API token(s))", user.name, user.tokens.len());
            }
        }
        UserCommand::Token { name } => {
            let token = users.new_token(name)?;
            users.save(&path)?;
            println!("{token}");
        }
    }
    Ok(0)
}
