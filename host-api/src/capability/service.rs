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
        inventory
            .host(host)
            .ok_or_else(|| CapabilityError::NotFound(format!("host {host} is not in the inventory")))?
            .service_manager
            .clone()
    };
    Ok(match manager {
        ServiceManager::Named(ServiceManagerName::Systemd) => {
            let verb = if action == Action::Status { "is-active" } else { action.name() };
            vec!["systemctl".into(), verb.into(), service.into()]
        }
        ServiceManager::Named(ServiceManagerName::Sysv) => vec!["service".into(), service.into(), action.name().into()],
        ServiceManager::Command { command } => {
            let line = command.replace("{action}", action.name()).replace("{service}", service);
            shell_words::split(&line).map_err(|e| {
                CapabilityError::Invalid(format!("host {host}: its service-manager command template does not parse: {e}"))
            })?
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
