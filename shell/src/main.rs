//! `opsh`: an ops shell for database failover runbooks.
//!
//! `opsh` opens the REPL; `opsh -c 'CMD'` or `opsh CMD…` runs one command; `opsh run FILE` runs a
//! script (one command per line, `#` comments, checked before anything runs, stops at the first
//! failure). Exit codes are documented in the README and in `host-api` (`Exit`).

mod operator;
mod render;
mod repl;
mod script;
mod session;
mod term;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use opsh_host::Exit;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "opsh", version, about = "An ops shell for database failover runbooks")]
struct Cli {
    /// The inventory (TOML); default: inventory.toml in the config directory.
    #[arg(long, env = "OPSH_INVENTORY", value_name = "PATH")]
    inventory: Option<PathBuf>,
    /// Apply changes without asking for confirmation.
    #[arg(long, short = 'y')]
    yes: bool,
    /// Show the plan of a change and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// For a read command (e.g. `otb status`): exit 6 if anything is shown as a problem, for
    /// monitoring and cron.
    #[arg(long)]
    check: bool,
    /// Team mode: lock and journal this change on this machine only, although the inventory
    /// names a state database (the journal records it).
    #[arg(long)]
    local_state: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    output: OutputFormat,
    /// Language of step titles and messages (default: from the locale).
    #[arg(long, value_parser = ["en", "ja"])]
    lang: Option<String>,
    /// Run one command and exit.
    #[arg(short = 'c', value_name = "COMMAND", conflicts_with = "words")]
    command: Option<String>,
    /// A command to run once (`opsh pg status`), or `run FILE`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "COMMAND")]
    words: Vec<String>,
}

/// The environment variables opsh reads, for `--help`.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("OPSH_INVENTORY", "the inventory (as --inventory)"),
    ("OPSH_CONFIG_DIR", "where inventory.toml is looked for (default ~/.config/opsh)"),
    ("OPSH_DATA_DIR", "history, journal, locks, third-party plugins, ssh sockets (default ~/.local/share/opsh)"),
    ("OPSH_CACHE_DIR", "compiled plugins (default ~/.cache/opsh)"),
    ("OPSH_PLUGIN_CPU_MS", "CPU time a plugin call may use (default 5000)"),
    ("OPSH_PLUGIN_MEMORY_MB", "memory a plugin may use (default 256)"),
    ("OPSH_DEBUG", "print internal detail on errors"),
];

/// `--help`'s closing text: the shell's own commands, the environment, the exit codes.
fn after_help() -> String {
    let mut text = String::from("Without a command, opsh opens its shell. `opsh run FILE` runs a script (one command per line).\n\nBuilt-in commands:\n");
    for (_, line) in session::BUILTINS {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str("Plugin commands: `opsh help` lists them (`opsh help PLUGIN` for one).\n");
    text.push_str("Shell integration: `opsh completions bash|zsh|fish` prints a completion script (commands, arguments, inventory names).\n\nEnvironment:\n");
    for (name, what) in ENVIRONMENT {
        text.push_str(&format!("  {name:<22} {what}\n"));
    }
    text.push_str(
        "\nExit codes: 0 ok, 1 failed (nothing changed), 2 usage, 3 failed after changing something, 4 outcome unknown, 5 refused, 6 a check found a problem (--check, doctor).",
    );
    text
}

/// `opsh __man`: the man page (roff), from the same definitions as `--help` (scripts/package
/// installs it as opsh(1)).
fn man_page() -> std::io::Result<()> {
    let command = Cli::command().after_help(after_help()).after_long_help(after_help());
    clap_mangen::Man::new(command).render(&mut std::io::stdout())
}

/// `--inventory` written after the command (`opsh pg status --inventory FILE`) counts as if
/// written before it: the session needs it before the first line is read. Every other option
/// is a line's own (`Session::line_options`).
fn hoist_inventory(cli: &mut Cli) -> Result<(), String> {
    let mut words = Vec::with_capacity(cli.words.len());
    let mut iter = std::mem::take(&mut cli.words).into_iter();
    while let Some(word) = iter.next() {
        if word == "--inventory" {
            cli.inventory = Some(PathBuf::from(iter.next().ok_or("--inventory needs a value")?));
        } else if let Some(path) = word.strip_prefix("--inventory=") {
            cli.inventory = Some(PathBuf::from(path));
        } else {
            words.push(word);
        }
    }
    cli.words = words;
    Ok(())
}

fn main() -> ExitCode {
    let parsed = Cli::command().after_help(after_help()).try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
    let mut cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage.code() as u8 } else { 0 });
        }
    };
    if let Err(e) = hoist_inventory(&mut cli) {
        eprintln!("opsh: {e}");
        return ExitCode::from(Exit::Usage.code() as u8);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("opsh: cannot start: {e}");
            return ExitCode::from(Exit::Failed.code() as u8);
        }
    };
    let exit = runtime.block_on(run(cli));
    ExitCode::from(exit.code() as u8)
}

async fn run(cli: Cli) -> Exit {
    // What needs no inventory and no plugin is answered before any plugin is compiled.
    match cli.words.first().map(String::as_str) {
        Some("completions") => {
            return match cli.words.get(1..).and_then(|rest| if let [shell] = rest { repl::completion_script(shell) } else { None }) {
                Some(script) => {
                    print!("{script}");
                    Exit::Success
                }
                None => {
                    eprintln!("opsh: usage: opsh completions bash|zsh|fish");
                    Exit::Usage
                }
            };
        }
        Some("__man") => {
            return match man_page() {
                Ok(()) => Exit::Success,
                Err(e) => {
                    eprintln!("opsh: writing the man page: {e}");
                    Exit::Failed
                }
            };
        }
        _ => {}
    }
    // A JSON document reads the same whatever LANG the cron job has: English unless --lang.
    let lang = cli.lang.clone().unwrap_or_else(|| if cli.output == OutputFormat::Json { "en".into() } else { locale_from_env() });
    let defaults = session::LineOptions { yes: cli.yes, dry_run: cli.dry_run, check: cli.check, output: cli.output, lang, local_state: cli.local_state };
    // One command on the command line needs its own plugin only; a shell, a script, `-c` and
    // the built-ins (help, plugins, resume, doctor …) need them all.
    let wanted = match (&cli.command, cli.words.first()) {
        (None, Some(word)) if !word.starts_with('_') => opsh_host::plugins::Wanted::Only(word),
        _ => opsh_host::plugins::Wanted::All,
    };
    let mut session = match session::Session::start(cli.inventory.as_deref(), bundled::BUNDLED, wanted, defaults).await {
        Ok(session) => session,
        Err(e) => {
            eprintln!("opsh: {e:#}");
            if cli.output == OutputFormat::Json {
                let mut doc = render::error_document(Exit::Usage, &format!("{e:#}"));
                doc["schema"] = render::JSON_SCHEMA.into();
                println!("{doc}");
            }
            return Exit::Usage;
        }
    };
    watch_interrupts(session.interrupt.clone());
    let exit = if let Some(line) = &cli.command {
        session.run_line(line).await
    } else if cli.words.first().map(String::as_str) == Some("run") {
        // Options after the file (`opsh run FILE --yes`) are the script's defaults, read as
        // every line's own options are.
        let flags = cli.words.get(2..).map(<[String]>::to_vec).unwrap_or_default();
        match (cli.words.get(1), session.line_options(flags)) {
            (Some(file), Ok((rest, options))) if rest.is_empty() => {
                session.defaults = options;
                script::run_file(&session, &PathBuf::from(file)).await
            }
            (_, Err(e)) => {
                eprintln!("opsh: {e}");
                Exit::Usage
            }
            _ => {
                eprintln!("opsh: usage: opsh run FILE [--yes] [--dry-run] [--output json] (one script file)");
                Exit::Usage
            }
        }
    } else if cli.words.first().map(String::as_str) == Some("__complete") {
        for candidate in repl::complete_words(&session, &cli.words[1..]) {
            println!("{candidate}");
        }
        Exit::Success
    } else if !cli.words.is_empty() {
        session.run_words(cli.words.clone()).await
    } else if std::io::stdin().is_terminal() {
        repl::run(&session).await
    } else {
        eprintln!("opsh: no terminal: give a command (-c 'CMD') or a script (opsh run FILE)");
        Exit::Usage
    };
    session.shutdown().await;
    exit
}

/// Ctrl-C while a change is being applied: the first press stops the run after the current step
/// (journaled, with the resume command), the second aborts the current step. Otherwise nothing
/// is being changed and opsh simply ends.
fn watch_interrupts(interrupt: opsh_host::runbook::Interrupt) {
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if !interrupt.applying() {
                if interrupt.cancels_idle() {
                    interrupt.press_idle();
                    continue;
                }
                eprintln!("\nopsh: interrupted (nothing was being changed)");
                std::process::exit(130);
            }
            match interrupt.press() {
                1 => eprintln!("\nopsh: stopping after the current step (Ctrl-C again aborts the step)"),
                _ => eprintln!("\nopsh: aborting the current step"),
            }
        }
    });
}

fn locale_from_env() -> String {
    for var in ["LC_ALL", "LC_MESSAGES", "LANG"] {
        if let Ok(value) = std::env::var(var)
            && !value.is_empty()
        {
            return if value.starts_with("ja") { "ja".into() } else { "en".into() };
        }
    }
    "en".into()
}
