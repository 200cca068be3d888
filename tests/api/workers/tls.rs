//! TLS for the workers, over real connections on 127.0.0.1: a throwaway CA and a server
//! certificate for 127.0.0.1 and localhost; webhooks to an `https://` receiver and mail to
//! an SMTP sink behind implicit TLS or STARTTLS, with AUTH. Trusted with the CA file
//! (`ORDO_TLS_CA_FILE`), refused with a certificate error without it.

use std::path::PathBuf;
use std::sync::Arc;

use ordo::{Application, Config, ProcessRole};
use ordo_api::Role::Support;
use ordo_workers::integration::{self, sign};
use ordo_workers::notification::Mailer;
use ordo_workers::tls::TrustRoots;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};
use crate::nats::setup;
use crate::workers::notifications::{customer, notify_until, SinkConfig, SinkTls, SmtpSink};
use crate::workers::webhooks::{history, placed_event_id, quick_pool, register, Receiver};

/// A CA of the test's own, its PEM in a file, and a server certificate it signed.
struct Pki {
    ca_file: PathBuf,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl Pki {
    fn new() -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "Ordo test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);

        let server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &issuer).unwrap();

        let ca_file =
            std::env::temp_dir().join(format!("ordo-test-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server_cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der()).unwrap(),
            )
            .unwrap();
        Self {
            ca_file,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        }
    }

    fn roots(&self) -> TrustRoots {
        TrustRoots::from_pem_file(&self.ca_file).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

#[tokio::test]
async fn a_webhook_reaches_an_https_endpoint_of_a_private_ca_once_the_ca_file_is_trusted() {
    let pki = Pki::new();
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hook = Receiver::start_on(|_| 200, Some(pki.acceptor.clone())).await;
    assert!(hook.url.starts_with("https://127.0.0.1:"), "{}", hook.url);
    let (endpoint, secret) = register(&app, &hook.url, json!(["order.placed"])).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let client = integration::client_with(Some(&pki.roots()), true).unwrap();
    let pool = quick_pool(&app, Some(client), 3);
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.outbox WHERE status = 'delivered'",
        1,
    )
    .await;

    let received = hook.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let (headers, body) = &received[0];
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let event_id = placed_event_id(&app, &order).await;
    assert_eq!(header("webhook-id"), event_id);
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    assert_eq!(
        header("webhook-signature"),
        sign(&secret, &event_id, timestamp, body).unwrap()
    );
    let payload: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["data"]["order_id"], json!(order));
    let (delivery, _) = history(&app, &endpoint).await;
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["last_status_code"], 200);
    s.cleanup().await;
}

#[tokio::test]
async fn without_the_ca_file_an_https_endpoint_of_a_private_ca_is_refused_for_its_certificate() {
    let pki = Pki::new();
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let hook = Receiver::start_on(|_| 200, Some(pki.acceptor.clone())).await;
    let (endpoint, _) = register(&app, &hook.url, json!(["order.placed"])).await;
    let customer = app.register_customer().await;
    let order = app.place_order(&customer).await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    // The default client: the webpki roots only.
    let pool = quick_pool(&app, None, 3);
    s.deliver_until(
        &app,
        &pool,
        "SELECT count(*) FROM integration.outbox WHERE status = 'failed'",
        1,
    )
    .await;

    assert_eq!(hook.received().len(), 0, "nothing crossed the refused TLS");
    let (delivery, attempts) = history(&app, &endpoint).await;
    assert_eq!(
        delivery["event_id"],
        json!(placed_event_id(&app, &order).await)
    );
    assert_eq!(attempts.len(), 3, "every scheduled attempt: {attempts:?}");
    for item in &attempts {
        assert_eq!(item["ok"], false);
        assert!(item["status_code"].is_null());
        let error = item["error"].as_str().unwrap();
        assert!(error.contains("certificate"), "{error}");
    }
    s.cleanup().await;
}

enum Until {
    /// Every event processed.
    Processed,
    /// The mail sender gave up on the notification.
    Failed,
}

/// Register a customer, place an order, and run the notification worker with `mailer`
/// until `until`. The order's id.
async fn notify_with(app: &TestApp, mailer: Mailer, until: Until) -> String {
    let (customer, _) = customer(app).await;
    let order = app.place_order(&customer).await;
    let events = app.event_count().await;
    let s = setup(app).await;
    s.publish_all(app).await;
    let runner = s.runner(app, Some(mailer)).await;
    match until {
        Until::Processed => {
            notify_until(
                &runner,
                app,
                "SELECT count(*) FROM notification.processed",
                events,
            )
            .await
        }
        Until::Failed => {
            notify_until(
                &runner,
                app,
                "SELECT count(*) FROM notification.notifications WHERE status = 'failed'",
                1,
            )
            .await
        }
    }
    s.cleanup().await;
    order
}

const USER: &str = "orders@shop.example";
const PASSWORD: &str = "p@ss w0rd/+";
/// The credentials percent-encoded, as they go into the URL.
const USERINFO: &str = "orders%40shop.example:p%40ss%20w0rd%2F%2B";

fn credentials() -> Option<(String, String)> {
    Some((USER.to_owned(), PASSWORD.to_owned()))
}

#[tokio::test]
async fn mail_crosses_smtps_with_auth_plain_to_a_server_of_a_private_ca() {
    let pki = Pki::new();
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let sink = SmtpSink::start_with(SinkConfig {
        tls: SinkTls::Implicit(pki.acceptor.clone()),
        credentials: credentials(),
        mechanisms: "PLAIN",
        ..SinkConfig::default()
    })
    .await;
    let url = format!("smtps://{USERINFO}@127.0.0.1:{}", sink.addr.port());
    let mailer =
        Mailer::with_roots(&url, "Ordo <orders@ordo.invalid>", Some(&pki.roots())).unwrap();
    let order = notify_with(&app, mailer, Until::Processed).await;

    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let mail = &mails[0];
    assert!(mail.tls);
    assert_eq!(mail.auth, credentials());
    assert_eq!(mail.from, "<orders@ordo.invalid>");
    assert_eq!(
        mail.header("Subject").unwrap(),
        format!("Your order {order} has been placed")
    );
    assert!(mail.data.contains("Hello Ada Lovelace"), "{}", mail.data);
    let listed = app
        .get(Support, &format!("/v1/notifications?order_id={order}"))
        .await;
    assert_eq!(listed.body["items"][0]["status"], "sent");
}

#[tokio::test]
async fn mail_crosses_starttls_required_with_auth_login() {
    let pki = Pki::new();
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let sink = SmtpSink::start_with(SinkConfig {
        tls: SinkTls::StartTls(pki.acceptor.clone()),
        credentials: credentials(),
        mechanisms: "LOGIN",
        ..SinkConfig::default()
    })
    .await;
    let url = format!(
        "smtp://{USERINFO}@localhost:{}?tls=required",
        sink.addr.port()
    );
    let mailer = Mailer::with_roots(&url, "orders@ordo.invalid", Some(&pki.roots())).unwrap();
    let order = notify_with(&app, mailer, Until::Processed).await;

    let mails = sink.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(mails[0].tls, "sent after STARTTLS");
    assert_eq!(mails[0].auth, credentials());
    assert_eq!(
        mails[0].header("Subject").unwrap(),
        format!("Your order {order} has been placed")
    );
}

#[tokio::test]
async fn tls_required_never_falls_back_to_plain_smtp_and_an_unknown_ca_is_refused() {
    let pki = Pki::new();
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    // A server without STARTTLS: `tls=required` sends nothing in the clear.
    let plain = SmtpSink::start().await;
    let url = format!("smtp://127.0.0.1:{}?tls=required", plain.addr.port());
    let mailer = Mailer::with_roots(&url, "orders@ordo.invalid", Some(&pki.roots())).unwrap();
    notify_with(&app, mailer, Until::Failed).await;
    assert_eq!(plain.mails().len(), 0);

    // A server of the private CA, its CA not trusted: refused for its certificate.
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let sink = SmtpSink::start_with(SinkConfig {
        tls: SinkTls::Implicit(pki.acceptor.clone()),
        ..SinkConfig::default()
    })
    .await;
    let url = format!("smtps://127.0.0.1:{}", sink.addr.port());
    let mailer = Mailer::new(&url, "orders@ordo.invalid").unwrap();
    notify_with(&app, mailer, Until::Failed).await;
    assert_eq!(sink.mails().len(), 0);
    let error: String = sqlx::query_scalar("SELECT error FROM notification.notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test]
async fn wrong_smtp_credentials_are_refused_and_never_repeated_in_the_error() {
    let pki = Pki::new();
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let sink = SmtpSink::start_with(SinkConfig {
        tls: SinkTls::Implicit(pki.acceptor.clone()),
        credentials: credentials(),
        mechanisms: "PLAIN LOGIN",
        ..SinkConfig::default()
    })
    .await;
    let url = format!(
        "smtps://orders%40shop.example:not-the-password@127.0.0.1:{}",
        sink.addr.port()
    );
    let mailer = Mailer::with_roots(&url, "orders@ordo.invalid", Some(&pki.roots())).unwrap();
    assert!(!format!("{mailer:?}").contains("not-the-password"));
    notify_with(&app, mailer, Until::Failed).await;
    assert_eq!(sink.mails().len(), 0);
    let error: String = sqlx::query_scalar("SELECT error FROM notification.notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(error.contains("535"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");
}

#[tokio::test]
async fn an_unreadable_or_invalid_ca_file_is_a_clear_startup_error() {
    let pki = Pki::new();
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let start = |ca_file: PathBuf| {
        let config = Config {
            database_url: app.database_url.clone().into(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            roles: vec![ProcessRole::Api],
            tls_ca_file: Some(ca_file),
            ..Config::defaults()
        };
        let pool = app.pool.clone();
        async move { Application::with_pool(&config, pool).await.map(|_| ()) }
    };
    let missing = std::env::temp_dir().join(format!("ordo-missing-{}.pem", uuid::Uuid::new_v4()));
    let error = format!("{:#}", start(missing.clone()).await.unwrap_err());
    assert!(error.contains("ORDO_TLS_CA_FILE"), "{error}");
    assert!(error.contains(&missing.display().to_string()), "{error}");

    let garbage = pki.ca_file.with_extension("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let error = format!("{:#}", start(garbage.clone()).await.unwrap_err());
    let _ = std::fs::remove_file(&garbage);
    assert!(error.contains("ORDO_TLS_CA_FILE"), "{error}");
    assert!(error.contains("certificate"), "{error}");

    // The real CA file starts the application.
    start(pki.ca_file.clone()).await.unwrap();
}
