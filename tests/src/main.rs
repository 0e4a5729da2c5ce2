//! `scripts/lab`: build, inspect, break and tear down lab topologies.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opsh_lab::{Lab, Topology};

#[derive(Parser)]
#[command(name = "lab", about = "Disposable opsh labs: real PostgreSQL and sshd per lab host, on loopback")]
struct Cli {
    /// The lab's directory (state, inventory.toml, keys, data).
    #[arg(long, global = true, default_value = "/tmp/opsh-lab")]
    dir: PathBuf,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Build a topology (a built-in name such as `basic`, or a topology file) and write DIR/inventory.toml.
    Up {
        topology: String,
        /// Addresses 127.42.BLOCK.* (run several labs side by side with different blocks).
        #[arg(long, default_value_t = 1)]
        block: u8,
    },
    /// Stop everything the lab started (by PID) and remove its directory.
    Down,
    /// Hosts, their services and PostgreSQL clusters.
    Status {
        /// Every running lab on this machine (any directory), by address block.
        #[arg(long)]
        all: bool,
    },
    /// Stop a database hard (cluster name, e.g. `alpha`) or kill a service (`HOST:SERVICE`).
    Crash { target: String },
    /// Make a host unreachable over ssh and SQL (its processes freeze).
    Cut { host: String },
    /// Make a cut host reachable again.
    Heal { host: String },
    /// Start a stopped (crashed) cluster again.
    Start { target: String },
    /// (internal) A Tungsten tool stand-in, run by the wrappers at the seed's paths.
    #[command(hide = true)]
    Tungsten {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        host: String,
        #[arg(long)]
        install: String,
        tool: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// (internal) The OpenTenBase node proxy the lab runs in front of a coordinator or datanode.
    #[command(hide = true)]
    OtbProxy {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        backend: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let LabCommand::Tungsten { state, host, install, tool, args } = &cli.command {
        return match opsh_lab::tungsten::main(state, host, install, tool, args) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("{tool} (lab stand-in): {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = match cli.command {
        LabCommand::Up { topology, block } => Topology::find(&topology).and_then(|t| Lab::up(&t, &cli.dir, block)).map(|lab| {
            let state = lab.keep();
            let lab = Lab::open(&state.dir);
            let mut lines = lab.map(|l| l.status()).unwrap_or_default();
            lines.push(format!("inventory: {}", state.dir.join("inventory.toml").display()));
            lines.join("\n")
        }),
        LabCommand::Down => Lab::down(&cli.dir).map(|()| format!("lab in {} is down", cli.dir.display())),
        LabCommand::Status { all: false } => Lab::open(&cli.dir).map(|lab| lab.status().join("\n")),
        LabCommand::Status { all: true } => Ok({
            let labs = opsh_lab::lab::blocks::all();
            if labs.is_empty() {
                "no lab is running".to_string()
            } else {
                labs.iter().filter_map(|(_, dir)| Lab::open(dir).ok()).map(|lab| lab.status().join("\n")).collect::<Vec<_>>().join("\n\n")
            }
        }),
        LabCommand::Crash { target } => Lab::open(&cli.dir).and_then(|lab| lab.crash(&target)),
        LabCommand::Cut { host } => Lab::open(&cli.dir).and_then(|mut lab| lab.cut(&host)),
        LabCommand::Heal { host } => Lab::open(&cli.dir).and_then(|mut lab| lab.heal(&host)),
        LabCommand::Start { target } => Lab::open(&cli.dir).and_then(|lab| lab.start(&target)),
        LabCommand::Tungsten { .. } => Ok(String::new()),
        LabCommand::OtbProxy { listen, backend } => opsh_lab::otb_proxy::serve(&listen, &backend).map(|()| String::new()),
    };
    match result {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
