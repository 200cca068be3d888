//! docker-compose.yml against the real CLI (`ordo::cli::Cli`) and configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, ValueEnum};
use ordo::cli::Cli;
use ordo::ProcessRole;
use ordo_workers::Worker;
use serde::Deserialize;

/// Variables an Ordo service may set that are not CLI arguments: the log filter and the
/// OpenTelemetry exporter read them themselves.
pub const READ_OUTSIDE_CLI: &[&str] = &[
    "ORDO_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "RUST_BACKTRACE",
];

/// Variables whose value is the URL of another service of the file.
const URL_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "NATS_URL",
    "ORDO_SMTP_URL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The part of the compose format this file uses; anything else is ignored.
#[derive(Debug, Deserialize)]
pub struct ComposeFile {
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    pub image: Option<String>,
    pub build: Option<Build>,
    pub entrypoint: Option<serde_norway::Value>,
    /// The list form only: a string would be split by rules this test does not repeat.
    pub command: Option<Vec<String>>,
    pub environment: BTreeMap<String, String>,
    pub ports: Vec<String>,
    pub volumes: Vec<String>,
    pub healthcheck: Option<Healthcheck>,
    pub depends_on: BTreeMap<String, DependsOn>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Build {
    pub context: String,
    pub dockerfile: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Healthcheck {
    pub test: Vec<String>,
    pub disable: bool,
}

#[derive(Debug, Deserialize)]
pub struct DependsOn {
    pub condition: String,
}

impl Service {
    /// `(host, container)` of each bind mount (`./source:/target[:ro]`).
    pub fn bind_mounts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.volumes.iter().filter_map(|v| {
            let mut parts = v.split(':');
            let source = parts.next()?;
            let target = parts.next()?;
            source.starts_with("./").then_some((source, target))
        })
    }
}

/// An Ordo process of the compose file, as the CLI understands its command and environment.
#[derive(Debug)]
pub struct OrdoService {
    pub name: String,
    /// `serve`, `worker` or `migrate`.
    pub subcommand: String,
    /// Where it serves HTTP (/metrics, /healthz, /readyz, the API): long-running ones only.
    pub http_port: Option<u16>,
    pub roles: Vec<ProcessRole>,
    pub workers: Vec<String>,
}

#[derive(Debug)]
pub struct Deployment {
    pub file: ComposeFile,
    /// In the file's order (by service name).
    pub ordo: Vec<OrdoService>,
}

impl Deployment {
    /// The services running `ordo serve` or `ordo worker`.
    pub fn long_running(&self) -> impl Iterator<Item = &OrdoService> {
        self.ordo.iter().filter(|s| s.http_port.is_some())
    }

    /// The first service whose image starts with `prefix`.
    pub fn by_image(&self, prefix: &str) -> Option<(&str, &Service)> {
        self.file
            .services
            .iter()
            .find(|(_, s)| s.image.as_deref().is_some_and(|i| i.starts_with(prefix)))
            .map(|(name, s)| (name.as_str(), s))
    }

    /// The repository file mounted as Prometheus' configuration.
    pub fn prometheus_config(&self) -> Option<&str> {
        let (_, prometheus) = self.by_image("prom/prometheus")?;
        prometheus
            .bind_mounts()
            .find(|(_, target)| *target == "/etc/prometheus/prometheus.yml")
            .map(|(source, _)| source)
    }
}

/// Parses the file (YAML merge keys applied, as Compose does) and checks it; every problem
/// is returned, not only the first.
pub fn check(yaml: &str, repo: &Path) -> Result<Deployment, Vec<String>> {
    let file = parse(yaml).map_err(|e| vec![e])?;
    let mut problems = Vec::new();
    let mut ordo = Vec::new();
    let mut image: Option<(&Option<String>, &Option<Build>)> = None;
    for (name, service) in &file.services {
        let built_here = service.build.is_some();
        let ordo_image = service
            .image
            .as_deref()
            .is_some_and(|i| i.starts_with("ordo"));
        if !built_here && !ordo_image {
            continue;
        }
        let wanted = Build {
            context: ".".into(),
            dockerfile: "Dockerfile".into(),
        };
        if service.build.as_ref() != Some(&wanted) {
            problems.push(format!("{name}: must be built from ./Dockerfile"));
        }
        match image {
            None => image = Some((&service.image, &service.build)),
            Some(first) if first != (&service.image, &service.build) => problems.push(format!(
                "{name}: every Ordo service must use the same image and build"
            )),
            Some(_) => {}
        }
        if service.entrypoint.is_some() {
            problems.push(format!("{name}: keep the image's entrypoint (ordo)"));
        }
        ordo.extend(ordo_service(name, service, &mut problems));
    }
    check_together(&file, &ordo, &mut problems);
    check_files(&file, repo, &mut problems);
    if problems.is_empty() {
        Ok(Deployment { file, ordo })
    } else {
        Err(problems)
    }
}

fn parse(yaml: &str) -> Result<ComposeFile, String> {
    let mut value: serde_norway::Value =
        serde_norway::from_str(yaml).map_err(|e| format!("not YAML: {e}"))?;
    value
        .apply_merge()
        .map_err(|e| format!("bad merge key: {e}"))?;
    serde_norway::from_value(value).map_err(|e| format!("not a compose file this test reads: {e}"))
}

/// The CLI without its environment variables, so the test's own environment plays no part;
/// each service's variables are passed as the flags they stand for instead.
fn cli_ignoring_environment() -> clap::Command {
    Cli::command().mut_subcommands(|sub| sub.mut_args(|arg| arg.env(None)))
}

fn first_line(e: &clap::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Parses the service's command and environment with the real CLI, exactly as `ordo` would
/// (command line first, then the variables, then the defaults).
fn ordo_service(name: &str, service: &Service, problems: &mut Vec<String>) -> Option<OrdoService> {
    let Some(command) = &service.command else {
        problems.push(format!("{name}: no command (list form)"));
        return None;
    };
    let argv: Vec<&str> = std::iter::once("ordo")
        .chain(command.iter().map(String::as_str))
        .collect();
    let cli = cli_ignoring_environment();
    let matches = match cli.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("{name}: `{}`: {}", argv.join(" "), first_line(&e)));
            return None;
        }
    };
    let (subcommand, sub_matches) = matches.subcommand()?;
    let declared = Cli::command();
    let sub = declared.find_subcommand(subcommand)?;

    let mut flags = Vec::new();
    for (key, value) in &service.environment {
        let Some(arg) = sub
            .get_arguments()
            .find(|a| a.get_env() == Some(OsStr::new(key)))
        else {
            if !READ_OUTSIDE_CLI.contains(&key.as_str()) {
                problems.push(format!("{name}: `ordo {subcommand}` does not read {key}"));
            }
            continue;
        };
        let Some(long) = arg.get_long() else {
            problems.push(format!("{name}: {key} has no flag to check it with"));
            continue;
        };
        if arg.is_hide_set() {
            problems.push(format!("{name}: {key} is test-only"));
        }
        if sub_matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            problems.push(format!(
                "{name}: {key} is also on the command line, which wins: set it once"
            ));
            continue;
        }
        let flag = if arg.get_action().takes_values() {
            format!("--{long}={value}")
        } else {
            // A switch: clap reads its variable as a bool.
            match value.as_str() {
                "true" => format!("--{long}"),
                "false" => continue,
                _ => {
                    problems.push(format!("{name}: {key}={value}: true or false"));
                    continue;
                }
            }
        };
        let mut one = argv.clone();
        one.push(&flag);
        if let Err(e) = cli.clone().try_get_matches_from(&one) {
            problems.push(format!("{name}: {key}={value}: {}", first_line(&e)));
            continue;
        }
        flags.push(flag);
    }
    let full: Vec<&str> = argv
        .iter()
        .copied()
        .chain(flags.iter().map(String::as_str))
        .collect();
    let matches = match cli.try_get_matches_from(&full) {
        Ok(m) => m,
        Err(e) => {
            problems.push(format!("{name}: `{}`: {}", full.join(" "), first_line(&e)));
            return None;
        }
    };
    let (_, effective) = matches.subcommand()?;
    match subcommand {
        "migrate" => Some(OrdoService {
            name: name.into(),
            subcommand: subcommand.into(),
            http_port: None,
            roles: Vec::new(),
            workers: Vec::new(),
        }),
        "serve" | "worker" => long_running(name, subcommand, service, effective, problems),
        other => {
            problems.push(format!("{name}: `ordo {other}` is not a service"));
            None
        }
    }
}

fn long_running(
    name: &str,
    subcommand: &str,
    service: &Service,
    matches: &ArgMatches,
    problems: &mut Vec<String>,
) -> Option<OrdoService> {
    let strings = |id: &str| -> Vec<String> {
        matches
            .try_get_many::<String>(id)
            .ok()
            .flatten()
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    };
    let (roles, workers) = if subcommand == "worker" {
        (vec![ProcessRole::Workers], strings("name"))
    } else {
        let roles = matches
            .try_get_many::<ProcessRole>("roles")
            .ok()
            .flatten()
            .map(|v| v.copied().collect())
            .unwrap_or_default();
        (roles, strings("workers"))
    };
    for worker in &workers {
        if Worker::from_name(worker).is_none() {
            problems.push(format!("{name}: no worker is called {worker}"));
        }
    }
    let Ok(Some(addr)) = matches.try_get_one::<SocketAddr>("http_addr") else {
        problems.push(format!("{name}: no HTTP address"));
        return None;
    };
    let port = addr.port();
    if !addr.ip().is_unspecified() {
        problems.push(format!(
            "{name}: listens on {addr}, which other containers cannot reach (use 0.0.0.0)"
        ));
    }
    let checked = service.healthcheck.as_ref().is_some_and(|h| {
        let test = h.test.join(" ");
        !h.disable
            && ["healthz", "readyz"]
                .iter()
                .any(|path| test.contains(&format!(":{port}/{path}")))
    });
    if !checked {
        problems.push(format!(
            "{name}: needs a health check on port {port} (/healthz or /readyz)"
        ));
    }
    for mapping in &service.ports {
        if container_port(mapping) != Some(port) {
            problems.push(format!(
                "{name}: publishes {mapping}, but ordo listens on {port}"
            ));
        }
    }
    if roles.contains(&ProcessRole::Api) && service.ports.is_empty() {
        problems.push(format!("{name}: runs the API but publishes no port"));
    }
    Some(OrdoService {
        name: name.into(),
        subcommand: subcommand.into(),
        http_port: Some(port),
        roles,
        workers,
    })
}

fn container_port(mapping: &str) -> Option<u16> {
    mapping.rsplit(':').next()?.split('/').next()?.parse().ok()
}

fn host_port(mapping: &str) -> Option<u16> {
    let mut parts = mapping.rsplit(':');
    parts.next()?;
    parts.next()?.parse().ok()
}

/// The host of a URL like `postgres://user:pw@host:5432/db`.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    host_port.split(':').next()
}

/// What holds only across services: every role and worker runs somewhere, the one-shot
/// migration comes first, URLs name services of the file, host ports do not clash.
fn check_together(file: &ComposeFile, ordo: &[OrdoService], problems: &mut Vec<String>) {
    let running: Vec<&OrdoService> = ordo.iter().filter(|s| s.http_port.is_some()).collect();
    for role in ProcessRole::value_variants() {
        if !running.iter().any(|s| s.roles.contains(role)) {
            problems.push(format!("no service runs the {role:?} role"));
        }
    }
    for worker in Worker::ALL {
        let runs = running.iter().any(|s| {
            s.roles.contains(&ProcessRole::Workers) && s.workers.iter().any(|w| w == worker.name())
        });
        if !runs {
            problems.push(format!("no service runs the {} worker", worker.name()));
        }
    }
    let api = running
        .iter()
        .filter(|s| s.roles.contains(&ProcessRole::Api))
        .count();
    if api < 2 {
        problems.push(format!("the API runs in {api} service(s), not two"));
    }

    let migrations: Vec<&OrdoService> = ordo.iter().filter(|s| s.subcommand == "migrate").collect();
    let [migrate] = migrations.as_slice() else {
        problems.push("exactly one service must run `ordo migrate`".into());
        return;
    };
    let migrate_service = &file.services[&migrate.name];
    let database = migrate_service.environment.get("DATABASE_URL");
    let waits_for = |service: &Service, on: &str, condition: &str| {
        service
            .depends_on
            .get(on)
            .is_some_and(|d| d.condition == condition)
    };
    if let Some(postgres) = database.and_then(|url| url_host(url)) {
        if !waits_for(migrate_service, postgres, "service_healthy") {
            problems.push(format!(
                "{}: must wait for {postgres} to be healthy",
                migrate.name
            ));
        }
    }
    for service in &running {
        let compose = &file.services[&service.name];
        if !waits_for(compose, &migrate.name, "service_completed_successfully") {
            problems.push(format!(
                "{}: must wait for {} to complete",
                service.name, migrate.name
            ));
        }
        if compose.environment.get("DATABASE_URL") != database {
            problems.push(format!(
                "{}: DATABASE_URL differs from the database {} migrates",
                service.name, migrate.name
            ));
        }
        if let Some(nats) = compose
            .environment
            .get("NATS_URL")
            .and_then(|u| url_host(u))
        {
            if !waits_for(compose, nats, "service_healthy") {
                problems.push(format!(
                    "{}: must wait for {nats} to be healthy",
                    service.name
                ));
            }
        }
        if !compose
            .environment
            .contains_key("OTEL_EXPORTER_OTLP_ENDPOINT")
        {
            problems.push(format!(
                "{}: sends no traces (OTEL_EXPORTER_OTLP_ENDPOINT)",
                service.name
            ));
        }
    }

    let mut published = BTreeSet::new();
    for (name, service) in &file.services {
        for (key, value) in &service.environment {
            if !URL_VARIABLES.contains(&key.as_str()) {
                continue;
            }
            match url_host(value) {
                Some(host) if file.services.contains_key(host) => {}
                _ => problems.push(format!(
                    "{name}: {key}={value} names no service of the file"
                )),
            }
        }
        for mapping in &service.ports {
            match host_port(mapping) {
                Some(port) if !published.insert(port) => {
                    problems.push(format!("{name}: host port {port} is published twice"));
                }
                Some(_) => {}
                None => problems.push(format!("{name}: write ports as \"HOST:CONTAINER\"")),
            }
        }
    }
}

/// Every file or folder the services mount from the repository exists.
fn check_files(file: &ComposeFile, repo: &Path, problems: &mut Vec<String>) {
    for (name, service) in &file.services {
        for (source, _) in service.bind_mounts() {
            if !repo.join(source).exists() {
                problems.push(format!("{name}: mounts {source}, which does not exist"));
            }
        }
    }
}
