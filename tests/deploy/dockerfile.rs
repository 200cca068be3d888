//! The Dockerfile builds the binary with the README's release build on a toolchain the
//! manifest accepts, from a context without `target/`, and runs it the way the compose
//! file expects.

use crate::compose::Deployment;

pub struct Files {
    pub dockerfile: String,
    pub dockerignore: String,
    pub manifest: String,
    pub readme: String,
    pub ci: String,
}

/// The build command, in full; the README documents it without `--bin ordo`.
const BUILD: &str = "cargo build --release --locked --bin ordo";
const RELEASE_BUILD: &str = "cargo build --release --locked";
/// CI's test command, also in the README; `--locked` as in the image's build, so that a
/// stale Cargo.lock fails CI rather than the image build.
const TEST: &str = "cargo test --workspace --locked";

/// `(INSTRUCTION, arguments)` with continuation lines joined and comments dropped.
fn instructions(dockerfile: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(start) => {
                current.push_str(start);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
                out.push((keyword.to_uppercase(), rest.trim().to_owned()));
                current.clear();
            }
        }
    }
    out
}

fn version(text: &str) -> Option<Vec<u32>> {
    text.split('.').map(|part| part.parse().ok()).collect()
}

/// Rust's `rust-version` from the workspace manifest.
fn rust_version(manifest: &str) -> Option<Vec<u32>> {
    manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .and_then(|v| version(v.trim_matches('"')))
}

/// The runtime stage: everything after the last `FROM`.
fn last_stage(steps: &[(String, String)]) -> &[(String, String)] {
    let start = steps.iter().rposition(|(k, _)| k == "FROM").unwrap_or(0);
    &steps[start..]
}

fn single(steps: &[(String, String)], keyword: &str) -> Option<String> {
    let mut found = steps.iter().filter(|(k, _)| k == keyword);
    let first = found.next().map(|(_, v)| v.clone());
    found.next().is_none().then_some(first).flatten()
}

pub fn check(files: &Files) -> Vec<String> {
    let mut problems = Vec::new();
    let steps = instructions(&files.dockerfile);
    let froms: Vec<&str> = steps
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, v)| v.as_str())
        .collect();
    let [builder, runtime] = froms.as_slice() else {
        return vec![format!("two stages expected, found {froms:?}")];
    };

    // The builder: a Rust image at least as new as the manifest's rust-version, on the
    // same Debian release as the runtime image (the binary links its glibc).
    let builder_image = builder.split_whitespace().next().unwrap_or_default();
    match builder_image
        .strip_prefix("rust:")
        .and_then(|t| t.split_once('-'))
    {
        Some((tag, debian)) => {
            match (version(tag), rust_version(&files.manifest)) {
                (Some(image), Some(floor)) if image >= floor => {}
                _ => problems.push(format!(
                    "{builder_image} is older than Cargo.toml's rust-version, or unreadable"
                )),
            }
            if !runtime.starts_with(&format!("debian:{debian}")) {
                problems.push(format!(
                    "build on {debian} and run on {runtime}: the same Debian, please"
                ));
            }
        }
        None => problems.push(format!(
            "the builder {builder_image} is not rust:VERSION-DEBIAN"
        )),
    }

    let build = steps
        .iter()
        .filter(|(k, _)| k == "RUN")
        .find_map(|(_, run)| run.find("cargo build").map(|at| &run[at..]))
        .map(|cmd| {
            cmd.split("&&")
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        });
    if build.as_deref() != Some(BUILD) {
        problems.push(format!("the image builds with {build:?}, not `{BUILD}`"));
    }
    if !files.readme.contains(RELEASE_BUILD) {
        problems.push(format!(
            "the README does not give the release build `{RELEASE_BUILD}`"
        ));
    }
    if !files.readme.contains("docker compose up --build") {
        problems.push("the README does not start with `docker compose up --build`".into());
    }
    for (name, text) in [("README.md", &files.readme), (".ci/run", &files.ci)] {
        if !text.contains(TEST) {
            problems.push(format!("{name} does not run the tests as `{TEST}`"));
        }
    }

    let runtime_steps = last_stage(&steps);
    if single(runtime_steps, "ENTRYPOINT").as_deref() != Some(r#"["ordo"]"#) {
        problems.push(r#"the image's ENTRYPOINT must be ["ordo"]"#.into());
    }
    match single(runtime_steps, "USER") {
        Some(user) if user != "root" && user != "0" => {}
        _ => problems.push("the image must run as a user other than root".into()),
    }
    match (
        http_port(&files.dockerfile),
        single(runtime_steps, "EXPOSE"),
    ) {
        (Some(port), Some(exposed)) if exposed == port.to_string() => {}
        (port, exposed) => problems.push(format!(
            "ORDO_HTTP_ADDR's port {port:?} and EXPOSE {exposed:?} differ"
        )),
    }
    if !single(runtime_steps, "HEALTHCHECK").is_some_and(|h| h.contains("/healthz")) {
        problems.push("the image's HEALTHCHECK must ask /healthz".into());
    }

    for ignored in ["target", ".git"] {
        if !files
            .dockerignore
            .lines()
            .any(|l| l.trim().trim_end_matches('/') == ignored)
        {
            problems.push(format!(".dockerignore must leave out {ignored}"));
        }
    }
    problems
}

/// The port of the image's `ENV ORDO_HTTP_ADDR=…`, which must listen on every interface.
fn http_port(dockerfile: &str) -> Option<u16> {
    let steps = instructions(dockerfile);
    let env = last_stage(&steps)
        .iter()
        .filter(|(k, _)| k == "ENV")
        .find_map(|(_, v)| v.strip_prefix("ORDO_HTTP_ADDR="))?;
    let addr: std::net::SocketAddr = env.parse().ok()?;
    addr.ip().is_unspecified().then_some(addr.port())
}

/// The compose file's Ordo services listen where the image says, and their health checks
/// use only what the image has.
pub fn check_against_compose(dockerfile: &str, deployment: &Deployment) -> Vec<String> {
    let mut problems = Vec::new();
    let port = http_port(dockerfile);
    let steps = instructions(dockerfile);
    let installs_curl = last_stage(&steps)
        .iter()
        .any(|(k, v)| k == "RUN" && v.contains("apt-get install") && v.contains(" curl"));
    for service in deployment.long_running() {
        if service.http_port != port {
            problems.push(format!(
                "{}: listens on {:?}, the image exposes {port:?}",
                service.name, service.http_port
            ));
        }
        let compose = &deployment.file.services[&service.name];
        let test = compose
            .healthcheck
            .as_ref()
            .map(|h| h.test.as_slice())
            .unwrap_or_default();
        if test.get(1).map(String::as_str) == Some("curl") && !installs_curl {
            problems.push(format!(
                "{}: its health check needs curl, which the image lacks",
                service.name
            ));
        }
    }
    problems
}
