//! The deployment files — Dockerfile, docker-compose.yml, the Prometheus and Grafana
//! configuration — checked against the real CLI, configuration and metric names, without a
//! Docker engine. Each checker returns every problem it finds, so one run lists them all;
//! the `*_rejects_*` tests feed them broken copies to show they can fail.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod compose;
mod dashboard;
mod dockerfile;
mod docs;
mod grafana;
mod prometheus;

use std::path::{Path, PathBuf};

use compose::Deployment;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: impl AsRef<Path>) -> String {
    let path = root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn compose_file() -> String {
    read("docker-compose.yml")
}

fn deployment() -> Deployment {
    compose::check(&compose_file(), &root()).unwrap_or_else(|problems| fail(&problems))
}

fn fail(problems: &[String]) -> ! {
    panic!(
        "{} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    )
}

fn assert_ok(problems: Vec<String>) {
    if !problems.is_empty() {
        fail(&problems);
    }
}

/// Asserts that some problem mentions every one of `needles`.
fn assert_problem(problems: &[String], needles: &[&str]) {
    assert!(
        problems
            .iter()
            .any(|p| needles.iter().all(|needle| p.contains(needle))),
        "expected a problem mentioning {needles:?}, got {problems:#?}"
    );
}

/// The compose file with `from` replaced by `to` (exactly once, so a stale test fails).
fn compose_with(from: &str, to: &str) -> String {
    let file = compose_file();
    assert_eq!(file.matches(from).count(), 1, "{from:?} must occur once");
    file.replacen(from, to, 1)
}

fn compose_problems(yaml: &str) -> Vec<String> {
    match compose::check(yaml, &root()) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

#[test]
fn every_ordo_service_runs_a_command_and_environment_the_cli_accepts() {
    let deployment = deployment();

    let names: Vec<&str> = deployment.ordo.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["api-1", "api-2", "migrate", "projector", "relay", "workers"]
    );
    let migrate = deployment
        .ordo
        .iter()
        .find(|s| s.name == "migrate")
        .unwrap();
    assert_eq!(migrate.subcommand, "migrate");
    assert_eq!(migrate.http_port, None);
    for service in deployment.long_running() {
        assert_eq!(service.http_port, Some(8080), "{}", service.name);
    }
}

#[test]
fn the_ordo_services_run_every_role_and_every_worker() {
    let deployment = deployment();
    let mut roles: Vec<_> = deployment
        .long_running()
        .flat_map(|s| s.roles.iter().copied())
        .collect();
    roles.sort_by_key(|r| format!("{r:?}"));
    roles.dedup();
    assert_eq!(roles.len(), 5, "{roles:?}");
    let api = deployment
        .long_running()
        .filter(|s| s.roles.contains(&ordo::ProcessRole::Api))
        .count();
    assert_eq!(api, 2);
}

#[test]
fn prometheus_scrapes_exactly_the_long_running_ordo_services() {
    let deployment = deployment();
    let config = read(deployment.prometheus_config().unwrap());
    assert_ok(prometheus::check(&config, &deployment));
}

#[test]
fn grafana_is_provisioned_with_prometheus_and_the_ordo_dashboard() {
    let deployment = deployment();
    assert_ok(grafana::check(&root(), &deployment));
}

#[test]
fn the_dashboard_queries_only_metrics_ordo_exports_and_shows_what_the_issue_asks() {
    let json = read("deploy/grafana/dashboards/ordo.json");
    let used = dashboard::check(&json, &["prometheus"]).unwrap_or_else(|p| fail(&p));
    for wanted in [
        "ordo_commands_total",
        "ordo_command_duration_seconds_bucket",
        "ordo_projection_lag_events",
        "ordo_projection_lag_seconds",
        "ordo_relay_lag_events",
        "ordo_worker_failed_total",
        "ordo_worker_dead_lettered_total",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

#[test]
fn the_dockerfile_builds_like_the_readme_and_ci_and_runs_what_compose_expects() {
    let files = dockerfile::Files {
        dockerfile: read("Dockerfile"),
        dockerignore: read(".dockerignore"),
        manifest: read("Cargo.toml"),
        readme: read("README.md"),
        ci: read(".ci/run"),
    };
    assert_ok(dockerfile::check(&files));
    assert_ok(dockerfile::check_against_compose(
        &files.dockerfile,
        &deployment(),
    ));
}

#[test]
fn docker_compose_config_accepts_the_file_when_docker_compose_is_installed() {
    let compose = |args: &[&str]| {
        std::process::Command::new("docker")
            .arg("compose")
            .args(args)
            .current_dir(root())
            .output()
    };
    match compose(&["version"]) {
        Ok(out) if out.status.success() => {}
        _ => {
            eprintln!("skipped: `docker compose` is not installed here");
            return;
        }
    }
    let out = compose(&["--file", "docker-compose.yml", "config", "--quiet"]).unwrap();
    assert!(
        out.status.success(),
        "docker compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_checker_rejects_a_variable_the_configuration_does_not_know() {
    let yaml = compose_with(
        "ORDO_SMTP_URL: smtp://mailpit:1025",
        "ORDO_SMTP_URL: smtp://mailpit:1025\n      ORDO_SMTP_PASSWORD: secret",
    );
    assert_problem(&compose_problems(&yaml), &["workers", "ORDO_SMTP_PASSWORD"]);
}

#[test]
fn the_compose_checker_rejects_a_value_the_configuration_cannot_parse() {
    let yaml = compose_with(
        "ORDO_WORKERS: notification,analytics,integration",
        "ORDO_WORKERS: notification,analytics,integration\n      ORDO_DB_MAX_CONNECTIONS: many",
    );
    assert_problem(
        &compose_problems(&yaml),
        &["workers", "ORDO_DB_MAX_CONNECTIONS"],
    );
}

#[test]
fn the_compose_checker_rejects_a_command_the_cli_does_not_parse() {
    let yaml = compose_with(
        r#"command: ["serve", "--roles", "relay"]"#,
        r#"command: ["serve", "--roles", "relais"]"#,
    );
    assert_problem(&compose_problems(&yaml), &["relay", "relais"]);
}

#[test]
fn the_compose_checker_rejects_a_role_no_service_runs() {
    let yaml = compose_with(
        r#"command: ["serve", "--roles", "projector,process-manager"]"#,
        r#"command: ["serve", "--roles", "projector"]"#,
    );
    assert_problem(&compose_problems(&yaml), &["ProcessManager"]);
}

#[test]
fn the_compose_checker_rejects_a_worker_no_service_runs() {
    let yaml = compose_with(
        "ORDO_WORKERS: notification,analytics,integration",
        "ORDO_WORKERS: notification,analytics",
    );
    assert_problem(&compose_problems(&yaml), &["integration"]);
}

#[test]
fn the_compose_checker_rejects_a_port_that_is_not_the_http_address() {
    let yaml = compose_with(r#""8081:8080""#, r#""8081:9090""#);
    assert_problem(&compose_problems(&yaml), &["api-2", "9090"]);
}

#[test]
fn the_compose_checker_rejects_an_address_other_containers_cannot_reach() {
    let yaml = compose_with(
        "ORDO_HTTP_ADDR: 0.0.0.0:8080",
        "ORDO_HTTP_ADDR: 127.0.0.1:8080",
    );
    assert_problem(&compose_problems(&yaml), &["127.0.0.1:8080"]);
}

#[test]
fn the_prometheus_checker_rejects_a_missing_and_an_unknown_target() {
    let deployment = deployment();
    let config = read(deployment.prometheus_config().unwrap()).replacen(
        r#"["relay:8080"]"#,
        r#"["relai:8080"]"#,
        1,
    );
    let problems = prometheus::check(&config, &deployment);
    assert_problem(&problems, &["relay:8080"]);
    assert_problem(&problems, &["relai:8080"]);
}

#[test]
fn the_dashboard_checker_rejects_an_unknown_metric_and_a_bare_histogram() {
    let json = read("deploy/grafana/dashboards/ordo.json")
        .replacen("ordo_relay_lag_events", "ordo_relay_lag", 1)
        .replacen(
            "ordo_worker_handler_duration_seconds_bucket",
            "ordo_worker_handler_duration_seconds",
            1,
        );
    let problems = dashboard::check(&json, &["prometheus"]).unwrap_err();
    assert_problem(&problems, &["ordo_relay_lag"]);
    assert_problem(
        &problems,
        &["ordo_worker_handler_duration_seconds", "histogram"],
    );
}

#[test]
fn the_dashboard_checker_rejects_a_label_the_metric_does_not_have() {
    let json = read("deploy/grafana/dashboards/ordo.json").replacen(
        "sum by (command, outcome) (rate(ordo_commands_total",
        "sum by (command, route) (rate(ordo_commands_total",
        1,
    );
    let problems = dashboard::check(&json, &["prometheus"]).unwrap_err();
    assert_problem(&problems, &["ordo_commands_total", "route"]);
}

#[test]
fn the_readme_and_docs_name_no_file_outside_the_repository_and_every_link_resolves() {
    let root = root();
    let files = docs::markdown_files(&root);
    assert!(
        files.len() > 10 && files.iter().any(|f| f.ends_with("API.md")),
        "{files:?}"
    );
    let mut problems = Vec::new();
    for file in &files {
        problems.extend(docs::check(file, &read(file), |p| root.join(p).exists()));
    }
    assert_ok(problems);
}

#[test]
fn the_docs_checker_rejects_outside_documents_and_links_to_nothing() {
    let file = Path::new("docs/API.md");
    let text = "See DESIGN.md §4 and [the notes](../../shared/notes.md).\n\
        [ADR](decisions/0099-none.md), [here](decisions/0001-a.md#why), \
        [web](https://example.com/x.md), [top](#top)\n\
        ```sh\n[not a link](nowhere.md)\n```\n\
        [gone]: ../missing.md\n";
    let exists = |p: &Path| p == Path::new("docs/decisions/0001-a.md");
    let problems = docs::check(file, text, exists);
    assert_problem(&problems, &["docs/API.md:1", "DESIGN.md"]);
    assert_problem(&problems, &["docs/API.md:1", "../shared"]);
    assert_problem(
        &problems,
        &["../../shared/notes.md", "leaves the repository"],
    );
    assert_problem(
        &problems,
        &["docs/decisions/0099-none.md", "does not exist"],
    );
    assert_problem(&problems, &["missing.md", "does not exist"]);
    assert_eq!(problems.len(), 5, "{problems:#?}");
}

/// `start NAME PORT ROLES POOL` lines of scripts/connection-budget, by name.
fn budget_processes(script: &str) -> std::collections::BTreeMap<String, (String, String)> {
    script
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "start")?;
            match words[at..] {
                ["start", name, _port, roles, pool] => {
                    Some((name.to_string(), (roles.to_string(), pool.to_string())))
                }
                _ => None,
            }
        })
        .collect()
}

#[test]
fn the_connection_budget_script_runs_the_compose_processes_with_their_roles_and_pools() {
    let deployment = deployment();
    let script = budget_processes(&read("scripts/connection-budget"));
    let mut compose = std::collections::BTreeMap::new();
    for (name, service) in &deployment.file.services {
        let command = service.command.clone().unwrap_or_default();
        if let ["serve", "--roles", roles] = command
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            let pool = service
                .environment
                .get("ORDO_DB_MAX_CONNECTIONS")
                .cloned()
                .unwrap_or_else(|| panic!("{name} sets no ORDO_DB_MAX_CONNECTIONS"));
            compose.insert(name.clone(), (roles.to_string(), pool));
        }
    }
    assert_eq!(compose.len(), 5, "{compose:?}");
    assert_eq!(
        script, compose,
        "scripts/connection-budget must start docker-compose.yml's processes as it does"
    );
}
