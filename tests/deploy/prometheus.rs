//! deploy/prometheus/prometheus.yml: it scrapes every long-running Ordo service of the
//! compose file on its HTTP port, and nothing that is not there.

use std::collections::BTreeSet;

use serde::Deserialize;

use crate::compose::Deployment;

#[derive(Debug, Deserialize)]
struct Config {
    scrape_configs: Vec<ScrapeConfig>,
}

#[derive(Debug, Deserialize)]
struct ScrapeConfig {
    job_name: String,
    metrics_path: Option<String>,
    #[serde(default)]
    static_configs: Vec<StaticConfig>,
}

#[derive(Debug, Deserialize)]
struct StaticConfig {
    targets: Vec<String>,
}

pub fn check(yaml: &str, deployment: &Deployment) -> Vec<String> {
    let config: Config = match serde_norway::from_str(yaml) {
        Ok(c) => c,
        Err(e) => return vec![format!("prometheus.yml: {e}")],
    };
    let mut problems = Vec::new();
    let wanted: BTreeSet<String> = deployment
        .long_running()
        .filter_map(|s| Some(format!("{}:{}", s.name, s.http_port?)))
        .collect();
    let mut scraped = BTreeSet::new();
    for job in &config.scrape_configs {
        for target in job.static_configs.iter().flat_map(|c| &c.targets) {
            let host = target.split(':').next().unwrap_or_default();
            if host == "localhost" {
                continue; // Prometheus itself
            }
            if !deployment.file.services.contains_key(host) {
                problems.push(format!(
                    "job {}: {target} is no service of the compose file",
                    job.job_name
                ));
            } else if deployment.ordo.iter().any(|s| s.name == host) {
                if job.metrics_path.as_deref().is_some_and(|p| p != "/metrics") {
                    problems.push(format!("job {}: Ordo serves /metrics", job.job_name));
                }
                scraped.insert(target.clone());
            }
        }
    }
    for missing in wanted.difference(&scraped) {
        problems.push(format!("Prometheus does not scrape {missing}"));
    }
    for extra in scraped.difference(&wanted) {
        problems.push(format!(
            "Prometheus scrapes {extra}, where no Ordo process listens"
        ));
    }
    problems
}
