//! Rendering results as aligned text tables or JSON (one JSON document per command on stdout).

use nu_ansi_term::{Color, Style};
use opsh_host::Exit;
use opsh_host::inventory::{Inventory, PasswordSource, ServiceManager};
use opsh_host::plugins::Registry;
use opsh_host::runbook::{Outcome, pick};
use opsh_host::sandbox::Origin;
use opsh_host::sandbox::bindings::runbook::{ArgKind, Cell, CommandKind, Table};
use serde_json::{Value, json};
use unicode_width::UnicodeWidthStr;

use crate::OutputFormat;
use crate::operator::Console;
use crate::session::{BUILTINS, LineOptions, Session};

/// A table that is not a plugin's (built-ins), in the same shape.
pub struct Grid {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<(String, Option<Color>)>>,
}

impl Grid {
    pub fn new(title: &str, columns: &[&str]) -> Self {
        Self { title: title.into(), columns: columns.iter().map(|c| c.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| (c, None)).collect());
    }

    fn from_table(table: &Table, lang: &str) -> Self {
        Self {
            title: pick(&table.title, lang).to_string(),
            columns: table.columns.clone(),
            rows: table
                .rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|cell| match cell {
                            Cell::Plain(t) => (t.clone(), None),
                            Cell::Good(t) => (t.clone(), Some(Color::Green)),
                            Cell::Warn(t) => (t.clone(), Some(Color::Yellow)),
                            Cell::Bad(t) => (t.clone(), Some(Color::Red)),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows.iter().map(|row| row.iter().map(|(text, color)| json!({
                "text": text,
                "style": match color { Some(Color::Green) => "good", Some(Color::Yellow) => "warn", Some(Color::Red) => "bad", _ => "plain" },
            })).collect::<Vec<_>>()).collect::<Vec<_>>(),
        })
    }

    fn print(&self, console: &Console) {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|i| {
                self.rows.iter().filter_map(|r| r.get(i)).map(|(t, _)| t.width()).chain([self.columns[i].width()]).max().unwrap_or(0)
            })
            .collect();
        if !self.title.is_empty() {
            console.out(&console.paint_out(Style::new().bold(), &self.title));
        }
        let header: Vec<String> = self.columns.iter().zip(&widths).map(|(c, w)| pad(c, *w)).collect();
        console.out(&console.paint_out(Style::new().underline(), header.join("  ").trim_end()));
        for row in &self.rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|((text, color), w)| {
                    let padded = pad(&text.replace('\n', " ⏎ "), *w);
                    match color {
                        Some(color) => console.paint_out(color.normal(), &padded),
                        None => padded,
                    }
                })
                .collect();
            console.out(cells.join("  ").trim_end());
        }
    }
}

fn pad(text: &str, width: usize) -> String {
    format!("{text}{}", " ".repeat(width.saturating_sub(text.width())))
}

pub fn grids(console: &Console, options: &LineOptions, grids: &[Grid], extra: Value) {
    if options.output == OutputFormat::Json {
        let mut doc = json!({ "tables": grids.iter().map(Grid::to_json).collect::<Vec<_>>() });
        if let (Value::Object(doc), Value::Object(extra)) = (&mut doc, extra) {
            doc.extend(extra);
        }
        console.out(&doc.to_string());
    } else {
        for (i, grid) in grids.iter().enumerate() {
            if i > 0 {
                console.out("");
            }
            grid.print(console);
        }
    }
}

pub fn outcome(console: &Console, options: &LineOptions, outcome: &Outcome) {
    let lang = options.lang.as_str();
    let exit = outcome.exit();
    if options.output == OutputFormat::Json {
        let mut doc = serde_json::to_value(outcome).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut doc {
            let tables = match outcome {
                Outcome::Tables { tables } => Some(tables),
                Outcome::Done { verification, .. } => Some(verification),
                _ => None,
            };
            if let Some(tables) = tables {
                let key = if matches!(outcome, Outcome::Tables { .. }) { "tables" } else { "verification" };
                map.insert(key.into(), Value::Array(tables.iter().map(|t| Grid::from_table(t, lang).to_json()).collect()));
            }
            map.insert("exit".into(), json!(exit.code()));
        }
        console.out(&doc.to_string());
        return;
    }
    match outcome {
        Outcome::Tables { tables } => {
            for (i, table) in tables.iter().enumerate() {
                if i > 0 {
                    console.out("");
                }
                Grid::from_table(table, lang).print(console);
            }
        }
        Outcome::Planned { .. } => console.note("dry run: nothing was changed"),
        Outcome::Done { verification, .. } => {
            for table in verification {
                Grid::from_table(table, lang).print(console);
            }
            console.note(&console.paint_err(Color::Green.bold(), "done: every step applied and verified"));
        }
        Outcome::Usage { message } | Outcome::Refused { message } => console.error(message),
        Outcome::Failed { message, changed, .. } => {
            console.error(message);
            if *changed {
                console.note("some steps were applied before the failure: the targets are partly changed; fix the cause and run the command again (it plans from the live state)");
            } else {
                console.note("nothing was changed");
            }
        }
        Outcome::Unknown { message, .. } => {
            console.error(message);
            console.note("outcome unknown: check the target before running the command again");
        }
    }
    debug_assert!(exit != Exit::Success || !matches!(outcome, Outcome::Failed { .. }));
}

pub fn help(console: &Console, session: &Session, args: &[String], options: &LineOptions) -> Exit {
    let lang = options.lang.as_str();
    match args {
        [] => {
            let mut builtins = Grid::new("Built-in commands", &["command", "what it does"]);
            for (name, text) in BUILTINS {
                builtins.row(vec![name.to_string(), text.to_string()]);
            }
            let mut plugins = Grid::new("Plugin commands", &["command", "kind", "what it does"]);
            for plugin in &session.registry.plugins {
                for command in &plugin.info.commands {
                    plugins.row(vec![format!("{} {}", plugin.name(), command.name), kind(command.kind).into(), pick(&command.summary, lang).into()]);
                }
            }
            grids(console, options, &[builtins, plugins], json!({}));
            if options.output == OutputFormat::Text {
                console.out("");
                console.out("Flags on any command: --dry-run, --yes, --output text|json, --lang en|ja.  `help PLUGIN COMMAND` for arguments and examples.");
            }
            Exit::Success
        }
        [name, rest @ ..] => {
            let Some(plugin) = session.registry.find(name) else {
                if let Some((_, text)) = BUILTINS.iter().find(|(n, _)| n == name) {
                    console.out(text);
                    return Exit::Success;
                }
                console.error(&format!("help: no plugin or command {name:?} (try `help`)"));
                return Exit::Usage;
            };
            let wanted = rest.join(" ");
            let commands: Vec<_> = plugin.info.commands.iter().filter(|c| wanted.is_empty() || c.name == wanted).collect();
            if commands.is_empty() {
                console.error(&format!("help: {name} has no command {wanted:?} (try `help {name}`)"));
                return Exit::Usage;
            }
            if options.output == OutputFormat::Json {
                console.out(&json!({ "plugin": plugin.name(), "commands": commands }).to_string());
                return Exit::Success;
            }
            console.out(&console.paint_out(Style::new().bold(), &format!("{} {} — {}", plugin.name(), plugin.info.version, pick(&plugin.info.summary, lang))));
            for command in commands {
                let usage: Vec<String> = command
                    .args
                    .iter()
                    .map(|a| match (a.kind, a.required) {
                        (ArgKind::Positional, _) => a.name.to_uppercase(),
                        (ArgKind::Option, true) => format!("--{} VALUE", a.name),
                        (ArgKind::Option, false) => format!("[--{} VALUE]", a.name),
                        (ArgKind::Flag, _) => format!("[--{}]", a.name),
                    })
                    .collect();
                console.out("");
                console.out(&console.paint_out(Style::new().bold(), &format!("{} {} {}", plugin.name(), command.name, usage.join(" ")).trim_end().to_string()));
                console.out(&format!("  {} ({})", pick(&command.help, lang), kind(command.kind)));
                for arg in &command.args {
                    console.out(&format!("    {:<16} {}", arg.name, pick(&arg.help, lang)));
                }
                for example in &command.examples {
                    console.out(&format!("  e.g. {}   # {}", example.command, pick(&example.description, lang)));
                }
            }
            Exit::Success
        }
    }
}

fn kind(kind: CommandKind) -> &'static str {
    match kind {
        CommandKind::Read => "read-only",
        CommandKind::Change => "changes things",
    }
}

pub fn plugins(console: &Console, registry: &Registry, options: &LineOptions) {
    let mut grid = Grid::new("Plugins", &["name", "version", "from", "commands", "capabilities"]);
    for plugin in &registry.plugins {
        grid.row(vec![
            plugin.name().into(),
            plugin.info.version.clone(),
            match &plugin.origin {
                Origin::Bundled => "bundled".into(),
                Origin::File(path) => path.display().to_string(),
            },
            plugin.info.commands.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(", "),
            plugin.info.capabilities.join(", "),
        ]);
    }
    let mut grids_out = vec![grid];
    if !registry.problems.is_empty() {
        let mut problems = Grid::new("Not loaded", &["problem"]);
        for problem in &registry.problems {
            problems.row(vec![problem.clone()]);
        }
        grids_out.push(problems);
    }
    grids(console, options, &grids_out, json!({}));
}

pub fn inventory(console: &Console, inventory: &Inventory, options: &LineOptions) {
    let mut hosts = Grid::new("Hosts", &["name", "address", "ssh", "service manager", "become"]);
    for (name, host) in &inventory.hosts {
        let ssh = format!("{}{}", host.ssh.clone().unwrap_or_else(|| host.address.clone()), host.ssh_port.map(|p| format!(" port {p}")).unwrap_or_default());
        let manager = match &host.service_manager {
            ServiceManager::Named(name) => format!("{name:?}").to_lowercase(),
            ServiceManager::Command { command } => format!("command: {command}"),
            ServiceManager::Unset => "-".into(),
        };
        hosts.row(vec![name.clone(), host.address.clone(), ssh, manager, format!("{:?}", host.escalation).to_lowercase()]);
    }
    let mut databases = Grid::new("Databases", &["name", "host", "port", "dbname", "user", "password from", "sslmode"]);
    for (name, db) in &inventory.databases {
        // Where the password comes from, never the password.
        let source = match &db.password {
            Some(PasswordSource::Env { env }) => format!("env ${env}"),
            Some(PasswordSource::File { file }) => format!("file {}", file.display()),
            Some(PasswordSource::Pgpass { pgpass: true }) | None => ".pgpass".into(),
            Some(PasswordSource::Pgpass { pgpass: false }) => "none".into(),
        };
        databases.row(vec![name.clone(), db.host.clone(), db.port.to_string(), db.dbname.clone(), db.user.clone(), source, db.sslmode.name().into()]);
    }
    let mut topologies = Grid::new("Topologies", &["name", "plugin", "members"]);
    for (name, topology) in &inventory.topologies {
        let members: Vec<String> = topology.members.iter().map(|(role, names)| format!("{role}: {}", names.join(", "))).collect();
        topologies.row(vec![name.clone(), topology.plugin.clone().unwrap_or_else(|| "-".into()), members.join("; ")]);
    }
    let mut grants = Grid::new("Grants", &["plugin", "sql", "ssh", "file-edit", "service"]);
    for (plugin, grant) in &inventory.grants {
        grants.row(vec![plugin.clone(), grant.sql.join(", "), grant.ssh.join(", "), grant.file_edit.join(", "), grant.service.join(", ")]);
    }
    let source = inventory.source.display().to_string();
    if options.output == OutputFormat::Text {
        console.out(&format!("Inventory: {}", if source.is_empty() { "(none: give one with --inventory PATH)".to_string() } else { source.clone() }));
        console.out("");
    }
    grids(console, options, &[hosts, databases, topologies, grants], json!({ "source": source }));
}
