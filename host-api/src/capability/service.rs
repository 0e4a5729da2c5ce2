//! Services on inventory hosts through the host's configured manager. Status follows the LSB
//! exit codes every manager here uses: 0 running, 3 stopped, 4 no such service.

use super::exec::{ExecRequest, Remote};
use super::{CapResult, CapabilityError};
use crate::inventory::{Inventory, LOCAL_HOST, ServiceManager, ServiceManagerName};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Stopped,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
    Reload,
    Status,
}

impl Action {
    /// A changing action by name (`status` changes nothing and is not one).
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Start, Self::Stop, Self::Restart, Self::Reload].into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Restart => "restart",
            Self::Reload => "reload",
            Self::Status => "status",
        }
    }
}

fn command(inventory: &Inventory, host: &str, service: &str, action: Action) -> CapResult<Vec<String>> {
    if service.is_empty() || !service.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)) {
        return Err(CapabilityError::Invalid(format!("service name {service:?} on host {host} is not valid")));
    }
    let manager = if host == LOCAL_HOST {
        ServiceManager::Named(ServiceManagerName::Sysv)
    } else {
        inventory.host(host).ok_or_else(|| CapabilityError::NotFound(format!("host {host} is not in the inventory")))?.service_manager.clone()
    };
    Ok(match manager {
        ServiceManager::Named(ServiceManagerName::Systemd) => {
            let verb = if action == Action::Status { "is-active" } else { action.name() };
            vec!["systemctl".into(), verb.into(), service.into()]
        }
        ServiceManager::Named(ServiceManagerName::Sysv) => vec!["service".into(), service.into(), action.name().into()],
        ServiceManager::Command { command } => {
            let line = command.replace("{action}", action.name()).replace("{service}", service);
            shell_words::split(&line).map_err(|e| CapabilityError::Invalid(format!("host {host}: its service-manager command template does not parse: {e}")))?
        }
        ServiceManager::Unset => {
            return Err(CapabilityError::Invalid(format!(
                "host {host} has no service-manager in the inventory; set service-manager = \"systemd\", \"sysv\" or {{ command = \"… {{action}} {{service}}\" }}"
            )));
        }
    })
}

pub async fn status(remote: &Remote, inventory: &Inventory, host: &str, service: &str) -> CapResult<State> {
    let mut request = ExecRequest::new(command(inventory, host, service, Action::Status)?);
    request.privileged = true;
    let output = remote.exec(host, request).await?;
    match output.status {
        Some(0) => Ok(State::Running),
        Some(3) => Ok(State::Stopped),
        Some(4) => Err(CapabilityError::NotFound(format!("service {service} does not exist on host {host}"))),
        _ => Ok(State::Unknown),
    }
}

pub async fn control(remote: &Remote, inventory: &Inventory, host: &str, service: &str, action: Action) -> CapResult<()> {
    let mut request = ExecRequest::new(command(inventory, host, service, action)?);
    request.privileged = true;
    let output = remote.exec(host, request).await?;
    match output.status {
        Some(0) => Ok(()),
        Some(4) | Some(5) if output.stderr_text().contains("not") => {
            Err(CapabilityError::NotFound(format!("service {service} does not exist on host {host}: {}", output.stderr_text())))
        }
        status => Err(CapabilityError::Failed(format!(
            "{} of service {service} on host {host} failed (exit {}): {}",
            action.name(),
            status.map_or("signal".to_string(), |s| s.to_string()),
            output.stderr_text()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_manager_gets_its_own_command_line() {
        let inventory = Inventory::parse(
            "[hosts.a]\naddress='127.0.0.2'\nservice-manager='systemd'\n[hosts.b]\naddress='127.0.0.3'\nservice-manager='sysv'\n[hosts.c]\naddress='127.0.0.4'\nservice-manager={ command = \"/opt/svc '{service}' {action}\" }\n[hosts.d]\naddress='127.0.0.5'\n",
        )
        .expect("inventory");
        assert_eq!(command(&inventory, "a", "dtService", Action::Status).expect("a"), ["systemctl", "is-active", "dtService"]);
        assert_eq!(command(&inventory, "a", "dtService", Action::Stop).expect("a"), ["systemctl", "stop", "dtService"]);
        assert_eq!(command(&inventory, "b", "av-manager", Action::Start).expect("b"), ["service", "av-manager", "start"]);
        assert_eq!(command(&inventory, "c", "gtm", Action::Restart).expect("c"), ["/opt/svc", "gtm", "restart"]);
        assert!(command(&inventory, "d", "x", Action::Start).unwrap_err().message().contains("has no service-manager"));
        assert!(command(&inventory, "a", "x; rm -rf /", Action::Start).is_err(), "service names cannot smuggle shell");
    }
}
