//! Secrets stay secret: the database password is not in `--help`, and SMTP credentials are
//! not offered over a connection that may fall back to plain text.

use std::process::Command;

use ordo::{Application, Config, SmtpUrl};

use crate::helpers::fresh_database_url;

#[test]
fn help_never_shows_the_database_password() {
    for command in [["serve", "--help"], ["migrate", "--help"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
            .args(command)
            .env(
                "DATABASE_URL",
                "postgres://ordo:hunter2-db@127.0.0.1:5432/ordo",
            )
            .env("ORDO_SMTP_URL", "smtps://mail:hunter2-smtp@127.0.0.1:465")
            .output()
            .unwrap();
        assert!(out.status.success(), "{command:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("DATABASE_URL"), "{help}");
        assert!(!help.contains("hunter2"), "{command:?}: {help}");
    }
}

#[tokio::test]
async fn smtp_credentials_over_opportunistic_tls_are_refused_at_start() {
    let database_url = fresh_database_url();
    let config = Config {
        database_url: database_url.clone().into(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        smtp_url: Some(SmtpUrl::new(
            "smtp://orders:hunter2@127.0.0.1:2525?tls=opportunistic",
        )),
        ..Config::defaults()
    };
    let refused = Application::build(&config).await;
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
    let error = format!("{:#}", refused.err().expect("refused at start"));
    assert!(error.contains("opportunistic"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");

    // Without credentials opportunistic TLS is allowed: nothing secret can leak.
    let database_url = fresh_database_url();
    let config = Config {
        database_url: database_url.clone().into(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        smtp_url: Some(SmtpUrl::new("smtp://127.0.0.1:2525?tls=opportunistic")),
        ..Config::defaults()
    };
    let built = Application::build(&config).await;
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
    assert!(built.is_ok(), "{:?}", built.err());
}
