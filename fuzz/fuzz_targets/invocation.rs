//! The words an operator types after a plugin's name: parsed into the command's arguments or
//! refused with a usage message, never a crash; what is parsed has every required argument.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opsh_host::sandbox::bindings::runbook::{ArgInfo, ArgKind, CommandInfo, CommandKind, Completion, PluginInfo};
use opsh_host::sandbox::bindings::types::Text;

fn text(s: &str) -> Text {
    Text { en: s.into(), ja: String::new() }
}

fn arg(name: &str, kind: ArgKind, required: bool) -> ArgInfo {
    ArgInfo { name: name.into(), kind, required, help: text(name), completion: Completion::None }
}

fn command(name: &str, args: Vec<ArgInfo>) -> CommandInfo {
    CommandInfo { name: name.into(), kind: CommandKind::Change, summary: text(name), help: text(name), args, examples: vec![] }
}

fuzz_target!(|words: Vec<String>| {
    let info = PluginInfo {
        name: "otb".into(),
        version: "1".into(),
        summary: text("fuzz"),
        commands: vec![
            command("status", vec![]),
            command("promote", vec![arg("node", ArgKind::Positional, true), arg("force", ArgKind::Flag, false), arg("to", ArgKind::Option, false)]),
            command("route set", vec![arg("node", ArgKind::Positional, true), arg("target", ArgKind::Positional, false), arg("on", ArgKind::Option, true)]),
        ],
        capabilities: vec![],
    };
    let Ok((command, invocation)) = opsh_host::runbook::parse_invocation(&info, &words) else { return };
    for arg in command.args.iter().filter(|a| a.required) {
        assert!(invocation.args.iter().any(|(name, _)| *name == arg.name), "required {} missing from {invocation:?}", arg.name);
    }
});
