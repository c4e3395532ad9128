//! What an installation's database holds besides nodes and tasks, as far as the twin
//! needs it: spaces (one default), environments and deployment targets (machines), and
//! the checks Octopus makes on the arguments of built-in tasks that act on machines
//! (`BuiltInTasks` in OctopusClients: `Upgrade`, `UpdateCalamari`, `Health`).

use serde_json::{Map, Value};

/// A space (`SpaceResource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Space {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub is_default: bool,
}

/// An environment (`EnvironmentResource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Environment {
    pub id: String,
    pub space_id: String,
    pub name: String,
}

/// A deployment target (`MachineResource`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    pub id: String,
    pub space_id: String,
    pub name: String,
    pub environment_ids: Vec<String>,
}

/// Spaces, environments and machines of one installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub spaces: Vec<Space>,
    pub environments: Vec<Environment>,
    pub machines: Vec<Machine>,
}

impl Default for Inventory {
    /// A fresh installation's default space with two environments and three targets.
    fn default() -> Self {
        let space = "Spaces-1".to_string();
        let environment = |id: &str, name: &str| Environment {
            id: id.into(),
            space_id: space.clone(),
            name: name.into(),
        };
        let machine = |id: &str, name: &str, env: &str| Machine {
            id: id.into(),
            space_id: space.clone(),
            name: name.into(),
            environment_ids: vec![env.into()],
        };
        Self {
            spaces: vec![Space {
                id: space.clone(),
                name: "Default".into(),
                slug: "default".into(),
                is_default: true,
            }],
            environments: vec![
                environment("Environments-1", "Production"),
                environment("Environments-2", "Staging"),
            ],
            machines: vec![
                machine("Machines-1", "web-01", "Environments-1"),
                machine("Machines-2", "web-02", "Environments-1"),
                machine("Machines-3", "stage-01", "Environments-2"),
            ],
        }
    }
}

impl Inventory {
    pub fn default_space(&self) -> Option<&Space> {
        self.spaces.iter().find(|s| s.is_default)
    }

    pub fn space(&self, id: &str) -> Option<&Space> {
        self.spaces.iter().find(|s| s.id.eq_ignore_ascii_case(id))
    }

    pub fn environment(&self, space: &str, id: &str) -> Option<&Environment> {
        self.environments
            .iter()
            .find(|e| e.space_id == space && e.id.eq_ignore_ascii_case(id))
    }

    pub fn machine(&self, space: &str, id: &str) -> Option<&Machine> {
        self.machines
            .iter()
            .find(|m| m.space_id == space && m.id.eq_ignore_ascii_case(id))
    }

    /// Machines of a space, optionally only those in one of `environments`.
    pub fn machines_in<'a>(
        &'a self,
        space: &'a str,
        environments: &'a [String],
    ) -> impl Iterator<Item = &'a Machine> + 'a {
        self.machines.iter().filter(move |m| {
            m.space_id == space
                && (environments.is_empty()
                    || m.environment_ids
                        .iter()
                        .any(|e| environments.iter().any(|x| x.eq_ignore_ascii_case(e))))
        })
    }

    /// What is wrong with the arguments of a built-in task created in `space`, one
    /// sentence each (empty: acceptable). Only the machine tasks are checked.
    pub fn argument_errors(
        &self,
        task: &str,
        space: &str,
        arguments: &Map<String, Value>,
    ) -> Vec<String> {
        let allowed: &[&str] = match task {
            "UpdateCalamari" => &["MachineIds"],
            "Upgrade" => &[
                "EnvironmentId",
                "WorkerpoolId",
                "MachineIds",
                "RestrictedTo",
            ],
            "Health" => &[
                "EnvironmentId",
                "WorkerpoolId",
                "MachineIds",
                "RestrictedTo",
                "Timeout",
                "MachineTimeout",
            ],
            _ => return Vec::new(),
        };
        let mut errors: Vec<String> = arguments
            .keys()
            .filter(|k| !allowed.contains(&k.as_str()))
            .map(|k| {
                format!(
                    "'{k}' is not an argument of the {task} task; it takes {}.",
                    allowed.join(", ")
                )
            })
            .collect();
        let machine_ids = match arguments.get("MachineIds") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(()),
            Some(_) => Err(()),
        };
        let machine_ids = machine_ids.unwrap_or_else(|()| {
            errors
                .push("MachineIds must be an array of machine ids, e.g. [\"Machines-1\"].".into());
            Vec::new()
        });
        for id in &machine_ids {
            if self.machine(space, id).is_none() {
                errors.push(format!("The machine '{id}' was not found in {space}."));
            }
        }
        let environment = match arguments.get("EnvironmentId") {
            None | Some(Value::Null) => None,
            Some(Value::String(id)) => Some(id.as_str()),
            Some(_) => {
                errors.push(
                    "EnvironmentId must be an environment id, e.g. \"Environments-1\".".into(),
                );
                None
            }
        };
        if let Some(id) = environment
            && self.environment(space, id).is_none()
        {
            errors.push(format!("The environment '{id}' was not found in {space}."));
        }
        match task {
            "UpdateCalamari" if machine_ids.is_empty() => {
                errors.push("UpdateCalamari needs MachineIds: the machines to update.".into());
            }
            "Upgrade"
                if machine_ids.is_empty()
                    && environment.is_none()
                    && !arguments.get("WorkerpoolId").is_some_and(Value::is_string) =>
            {
                errors.push(
                    "Upgrade needs EnvironmentId, WorkerpoolId or MachineIds: the Tentacles to upgrade."
                        .into(),
                );
            }
            _ => {}
        }
        if let Some(restricted) = arguments.get("RestrictedTo")
            && !matches!(
                restricted.as_str(),
                Some("DeploymentTargets" | "Workers" | "Unrestricted")
            )
        {
            errors.push("RestrictedTo must be DeploymentTargets, Workers or Unrestricted.".into());
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn update_calamari_takes_machine_ids_only() {
        let inv = Inventory::default();
        let ok = args(json!({"MachineIds": ["Machines-1", "Machines-2"]}));
        assert!(
            inv.argument_errors("UpdateCalamari", "Spaces-1", &ok)
                .is_empty()
        );
        let by_environment = args(json!({"EnvironmentId": "Environments-1"}));
        let errors = inv.argument_errors("UpdateCalamari", "Spaces-1", &by_environment);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains("'EnvironmentId' is not an argument"));
        assert!(errors[1].contains("needs MachineIds"));
        let unknown = args(json!({"MachineIds": ["Machines-9"]}));
        assert_eq!(
            inv.argument_errors("UpdateCalamari", "Spaces-1", &unknown),
            vec!["The machine 'Machines-9' was not found in Spaces-1.".to_string()]
        );
        let wrong_type = args(json!({"MachineIds": "Machines-1"}));
        assert!(
            !inv.argument_errors("UpdateCalamari", "Spaces-1", &wrong_type)
                .is_empty()
        );
    }

    #[test]
    fn upgrade_needs_a_target_in_its_space() {
        let inv = Inventory::default();
        let env =
            args(json!({"EnvironmentId": "Environments-2", "RestrictedTo": "DeploymentTargets"}));
        assert!(inv.argument_errors("Upgrade", "Spaces-1", &env).is_empty());
        assert!(
            !inv.argument_errors("Upgrade", "Spaces-1", &Map::new())
                .is_empty()
        );
        assert!(!inv.argument_errors("Upgrade", "Spaces-2", &env).is_empty());
        let bad = args(json!({"EnvironmentId": "Environments-1", "RestrictedTo": "Everything"}));
        assert_eq!(inv.argument_errors("Upgrade", "Spaces-1", &bad).len(), 1);
    }

    #[test]
    fn machines_filter_by_environment() {
        let inv = Inventory::default();
        let production = ["environments-1".to_string()];
        let prod: Vec<&str> = inv
            .machines_in("Spaces-1", &production)
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(prod, vec!["Machines-1", "Machines-2"]);
        assert_eq!(inv.machines_in("Spaces-1", &[]).count(), 3);
        assert_eq!(inv.machines_in("Spaces-2", &[]).count(), 0);
    }
}
