//! Grafana's provisioning: the Prometheus data source points at the compose file's
//! Prometheus, and the dashboard provider loads the folder where the dashboards are mounted.

use std::path::Path;

use serde::Deserialize;

use crate::compose::{url_host, Deployment};

#[derive(Debug, Deserialize)]
struct Datasources {
    datasources: Vec<Datasource>,
}

#[derive(Debug, Deserialize)]
struct Datasource {
    uid: String,
    #[serde(rename = "type")]
    kind: String,
    url: String,
}

#[derive(Debug, Deserialize)]
struct Providers {
    providers: Vec<Provider>,
}

#[derive(Debug, Deserialize)]
struct Provider {
    options: ProviderOptions,
}

#[derive(Debug, Deserialize)]
struct ProviderOptions {
    path: String,
}

const PROVISIONING: &str = "/etc/grafana/provisioning";

pub fn check(repo: &Path, deployment: &Deployment) -> Vec<String> {
    let mut problems = Vec::new();
    let Some((name, grafana)) = deployment.by_image("grafana/grafana") else {
        return vec!["no grafana service".into()];
    };
    let mounted_from = |target: &str| {
        grafana
            .bind_mounts()
            .find(|(_, t)| *t == target)
            .map(|(source, _)| repo.join(source))
    };
    let Some(provisioning) = mounted_from(PROVISIONING) else {
        return vec![format!("{name}: nothing is mounted at {PROVISIONING}")];
    };

    let datasources: Datasources =
        match read_yaml(&provisioning.join("datasources/datasources.yml")) {
            Ok(d) => d,
            Err(e) => return vec![e],
        };
    let prometheus = deployment.by_image("prom/prometheus").map(|(n, _)| n);
    let Some(source) = datasources
        .datasources
        .iter()
        .find(|d| d.kind == "prometheus")
    else {
        return vec!["no Prometheus data source".into()];
    };
    if url_host(&source.url) != prometheus {
        problems.push(format!(
            "the Prometheus data source points at {}",
            source.url
        ));
    }
    if source.uid != "prometheus" {
        problems
            .push("the dashboards refer to the Prometheus data source as uid `prometheus`".into());
    }

    let providers: Providers = match read_yaml(&provisioning.join("dashboards/dashboards.yml")) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    for provider in &providers.providers {
        match mounted_from(&provider.options.path) {
            Some(folder) if folder.join("ordo.json").exists() => {}
            _ => problems.push(format!(
                "{name}: the dashboards at {} are not mounted from a folder holding ordo.json",
                provider.options.path
            )),
        }
    }
    if providers.providers.is_empty() {
        problems.push("no dashboard provider".into());
    }
    problems
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_norway::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}
