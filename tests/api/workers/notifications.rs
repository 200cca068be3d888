//! The notification worker on real JetStream (streams, prefixes and consumers of the test's
//! own), the mail sender and a local SMTP sink: one e-mail per placed, shipped, cancelled
//! and refunded, each recorded; recorded only without SMTP; nothing sent twice when
//! everything is delivered again; an SMTP outage delays mail, every attempt recorded, until
//! the server is back; a sender killed between sending and recording sends again, with the
//! same `Message-ID`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ordo::ProcessRole;
use ordo_api::Role::{Admin, Analyst, Storefront, Support};
use ordo_workers::notification::sender::{MailConfig, MailSender};
use ordo_workers::notification::{Mailer, Notification};
use ordo_workers::ops::{OpsError, ReplayFrom, WorkersAdmin};
use ordo_workers::retry::RetrySchedule;
use ordo_workers::WorkerRunner;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::helpers::{reads_of, rows_scanned, spawn_app_with, TestApp};
use crate::nats::{setup, Setup};
use crate::workers::{rows_read, rows_read_by, worker_status};

// ---------------------------------------------------------------- an SMTP sink

#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
    /// The user and password of a successful AUTH in this session.
    pub auth: Option<(String, String)>,
    /// Whether the mail came over TLS (implicit or after STARTTLS).
    pub tls: bool,
}

impl Mail {
    /// A header's value, unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", "\t");
        unfolded.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// How the sink secures its sessions.
#[derive(Clone, Default)]
pub(crate) enum SinkTls {
    #[default]
    None,
    /// TLS from the first byte (`smtps://`).
    Implicit(tokio_rustls::TlsAcceptor),
    /// STARTTLS offered in the EHLO answer.
    StartTls(tokio_rustls::TlsAcceptor),
}

#[derive(Clone)]
pub(crate) struct SinkConfig {
    pub tls: SinkTls,
    /// When set, MAIL is refused before an AUTH with exactly these.
    pub credentials: Option<(String, String)>,
    /// The AUTH mechanisms the EHLO answer offers.
    pub mechanisms: &'static str,
    /// The first this many connections are greeted with `421` (the server is away).
    pub refuse_first: usize,
    /// After the first mail's data, the server keeps it and never answers.
    pub hang_after_first_mail: bool,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            tls: SinkTls::None,
            credentials: None,
            mechanisms: "PLAIN LOGIN",
            refuse_first: 0,
            hang_after_first_mail: false,
        }
    }
}

/// A minimal SMTP server on 127.0.0.1: accepts every message and keeps it.
pub(crate) struct SmtpSink {
    pub url: String,
    pub addr: std::net::SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> Self {
        Self::start_with(SinkConfig::default()).await
    }

    pub async fn start_with(config: SinkConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("smtp://{addr}");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        let task = tokio::spawn(async move {
            let mut connections = 0;
            while let Ok((mut socket, _)) = listener.accept().await {
                connections += 1;
                if connections <= config.refuse_first {
                    let _ = socket.write_all(b"421 4.3.2 away for now\r\n").await;
                    continue;
                }
                tokio::spawn(connection(socket, kept.clone(), config.clone()));
            }
        });
        Self {
            url,
            addr,
            mails,
            task,
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(
    socket: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
    config: SinkConfig,
) {
    match config.tls.clone() {
        SinkTls::None => {
            session(socket, &mails, &config, true, false).await;
        }
        SinkTls::Implicit(acceptor) => {
            if let Ok(tls) = acceptor.accept(socket).await {
                session(tls, &mails, &config, true, true).await;
            }
        }
        SinkTls::StartTls(acceptor) => {
            if let Some(socket) = session(socket, &mails, &config, true, false).await {
                if let Ok(tls) = acceptor.accept(socket).await {
                    session(tls, &mails, &config, false, true).await;
                }
            }
        }
    }
}

/// One SMTP session on `stream`; `Some(stream)` back when the client asked for STARTTLS.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    mails: &Mutex<Vec<Mail>>,
    config: &SinkConfig,
    greet: bool,
    tls: bool,
) -> Option<S> {
    let mut lines = BufReader::new(stream);
    let send = |text: &str| format!("{text}\r\n").into_bytes();
    if greet
        && lines
            .get_mut()
            .write_all(&send("220 sink ESMTP"))
            .await
            .is_err()
    {
        return None;
    }
    let offer_starttls = !tls && matches!(config.tls, SinkTls::StartTls(_));
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut auth: Option<(String, String)> = None;
    let b64 = |text: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    };
    loop {
        let mut line = String::new();
        match lines.read_line(&mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split([' ', ':'])
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let answer: String = match verb.as_str() {
            "EHLO" | "HELO" => {
                let starttls = if offer_starttls {
                    "250-STARTTLS\r\n"
                } else {
                    ""
                };
                format!("250-sink\r\n{starttls}250 AUTH {}", config.mechanisms)
            }
            "STARTTLS" if offer_starttls => {
                if lines.get_mut().write_all(&send("220 ready")).await.is_err() {
                    return None;
                }
                return Some(lines.into_inner());
            }
            "AUTH" => {
                let mut words = command.split(' ').skip(1);
                let mechanism = words.next().unwrap_or_default().to_ascii_uppercase();
                let initial = words.next().map(str::to_owned);
                let mut ask = async |prompt: &str| {
                    lines.get_mut().write_all(&send(prompt)).await.ok()?;
                    let mut l = String::new();
                    lines.read_line(&mut l).await.ok()?;
                    Some(l)
                };
                let given = match mechanism.as_str() {
                    "PLAIN" if config.mechanisms.contains("PLAIN") => {
                        let response = match initial {
                            Some(r) => r,
                            None => ask("334 ").await?,
                        };
                        let decoded = b64(&response);
                        let mut parts = decoded.split('\0').skip(1);
                        parts
                            .next()
                            .zip(parts.next())
                            .map(|(u, p)| (u.to_owned(), p.to_owned()))
                    }
                    "LOGIN" if config.mechanisms.contains("LOGIN") => {
                        let user = ask("334 VXNlcm5hbWU6").await?;
                        let password = ask("334 UGFzc3dvcmQ6").await?;
                        Some((b64(&user), b64(&password)))
                    }
                    _ => None,
                };
                match given {
                    Some(given) if config.credentials.as_ref().is_none_or(|c| *c == given) => {
                        auth = Some(given);
                        "235 2.7.0 Authentication successful".into()
                    }
                    _ => "535 5.7.8 Authentication credentials invalid".into(),
                }
            }
            "MAIL" if config.credentials.is_some() && auth.is_none() => {
                "530 5.7.0 Authentication required".into()
            }
            "MAIL" => {
                from = command.get(10..).unwrap_or_default().trim().to_owned();
                "250 OK".into()
            }
            "RCPT" => {
                to.push(command.get(8..).unwrap_or_default().trim().to_owned());
                "250 OK".into()
            }
            "DATA" => {
                if lines
                    .get_mut()
                    .write_all(&send("354 go ahead"))
                    .await
                    .is_err()
                {
                    return None;
                }
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    match lines.read_line(&mut l).await {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                    if l == ".\r\n" {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                }
                let first = {
                    let mut mails = mails.lock().unwrap();
                    mails.push(Mail {
                        from: std::mem::take(&mut from),
                        to: std::mem::take(&mut to),
                        data,
                        auth: auth.clone(),
                        tls,
                    });
                    mails.len() == 1
                };
                if first && config.hang_after_first_mail {
                    std::future::pending::<()>().await;
                }
                "250 OK queued".into()
            }
            "RSET" => {
                (from, to) = (String::new(), Vec::new());
                "250 OK".into()
            }
            "NOOP" => "250 OK".into(),
            "QUIT" => {
                let _ = lines.get_mut().write_all(&send("221 bye")).await;
                return None;
            }
            _ => "502 not implemented".into(),
        };
        if lines.get_mut().write_all(&send(&answer)).await.is_err() {
            return None;
        }
    }
}

// ---------------------------------------------------------------- NATS set-up

/// The notification worker and, with an SMTP server, a mail sender with quick retries.
pub(crate) struct Notifier {
    pub runner: WorkerRunner,
    pub sender: Option<Arc<MailSender>>,
}

impl Notifier {
    /// Handle one fetch of the waiting messages (up to 50, waiting at most 5 s); returns how
    /// many were settled.
    pub(crate) async fn fetch_once(&self) -> usize {
        self.runner.step(50, Duration::from_secs(5)).await.unwrap()
    }
}

impl Setup {
    pub(crate) async fn runner(&self, app: &TestApp, mailer: Option<Mailer>) -> Notifier {
        let runner = WorkerRunner::connect(
            app.pool.clone(),
            Notification::new(mailer.is_some()),
            self.worker_config.clone(),
        )
        .await
        .unwrap();
        let sender = mailer.map(|mailer| quick_sender(app, mailer, Duration::from_secs(30)));
        Notifier { runner, sender }
    }
}

/// A mail sender with quick retries (5 attempts) and the given lease.
pub(crate) fn quick_sender(app: &TestApp, mailer: Mailer, lease: Duration) -> Arc<MailSender> {
    let no_master_key = ordo_commands::privacy::Keyring::new(app.pool.clone(), None);
    quick_sender_with_keys(no_master_key, mailer, lease)
}

/// [`quick_sender`] opening sealed recipients with `keys`.
pub(crate) fn quick_sender_with_keys(
    keys: ordo_commands::privacy::Keyring,
    mailer: Mailer,
    lease: Duration,
) -> Arc<MailSender> {
    MailSender::new(
        keys,
        mailer,
        MailConfig {
            poll: Duration::from_millis(20),
            schedule: RetrySchedule::quick(Duration::from_millis(30), 5),
            lease,
            ..MailConfig::default()
        },
    )
}

/// Step the worker and the sender until `sql` counts `expected` and no notification waits.
pub(crate) async fn notify_until(n: &Notifier, app: &TestApp, sql: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count: i64 = sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap();
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notification.notifications WHERE status = 'pending'",
        )
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if count >= expected && (waiting == 0 || n.sender.is_none()) {
            assert_eq!(count, expected, "{sql}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sql}: {count} of {expected}, {waiting} waiting"
        );
        n.runner.step(50, Duration::from_millis(50)).await.unwrap();
        if let Some(sender) = &n.sender {
            if sender.step().await.unwrap() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A registered customer: (id, e-mail).
pub(crate) async fn customer(app: &TestApp) -> (String, String) {
    let email = format!("n{}@example.com", uuid::Uuid::new_v4().simple());
    let id = app
        .post(
            Storefront,
            "/v1/customers",
            json!({"email": email, "name": "Ada Lovelace"}),
        )
        .await
        .assert_status(201)
        .id();
    (id, email)
}

/// An order of 29.99 EUR, confirmed, paid (captured), shipped, then refunded 5.00 EUR;
/// and a second order, cancelled. Returns (shipped order, cancelled order).
async fn orders(app: &TestApp, customer: &str) -> (String, String) {
    let shipped = app.place_order(customer).await;
    let cancelled = app.place_order(customer).await;
    app.confirm(&shipped).await;
    let payment = app.captured_payment(&shipped, 2999).await;
    app.ship(&shipped).await;
    app.refund(&payment, 500, "dented mug").await;
    app.cancel(&cancelled, "changed my mind").await;
    (shipped, cancelled)
}

fn field<'a>(items: &'a Value, name: &str) -> Vec<&'a str> {
    items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[name].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn customers_are_mailed_on_placed_shipped_cancelled_and_refunded_once_even_when_everything_is_delivered_again(
) {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let sink = SmtpSink::start().await;
    let (customer, email) = customer(&app).await;
    let (shipped, cancelled) = orders(&app, &customer).await;
    let events = app.event_count().await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let mailer = Mailer::new(&sink.url, "Ordo <orders@ordo.invalid>").unwrap();
    let runner = s.runner(&app, Some(mailer.clone())).await;
    notify_until(
        &runner,
        &app,
        "SELECT count(*) FROM notification.processed",
        events,
    )
    .await;

    let mails = sink.mails();
    assert_eq!(mails.len(), 5, "{mails:#?}");
    let ids: std::collections::BTreeSet<String> = mails
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "one Message-ID per event and kind");
    for mail in &mails {
        assert_eq!(mail.to, [format!("<{email}>")]);
        assert_eq!(mail.from, "<orders@ordo.invalid>");
        assert!(mail.header("To").unwrap().contains(&email));
    }
    let mut subjects: Vec<String> = mails.iter().map(|m| m.header("Subject").unwrap()).collect();
    subjects.sort();
    let mut expected = vec![
        format!("Refund of 5.00 EUR for your order {shipped}"),
        format!("Your order {cancelled} has been cancelled"),
        format!("Your order {cancelled} has been placed"),
        format!("Your order {shipped} has been placed"),
        format!("Your order {shipped} has shipped"),
    ];
    expected.sort();
    assert_eq!(subjects, expected);
    let placed = mails
        .iter()
        .find(|m| m.header("Subject").unwrap() == format!("Your order {shipped} has been placed"))
        .unwrap();
    assert!(placed.data.contains("Total: 29.99 EUR"), "{}", placed.data);
    assert!(
        placed.data.contains("Hello Ada Lovelace"),
        "{}",
        placed.data
    );

    // The API lists them, newest first, for support and admins only.
    let listed = app
        .get(Support, &format!("/v1/notifications?order_id={shipped}"))
        .await;
    listed.assert_status(200);
    assert_eq!(
        field(&listed.body, "kind"),
        ["payment_refunded", "order_shipped", "order_placed"]
    );
    assert_eq!(field(&listed.body, "status"), ["sent"; 3]);
    assert_eq!(field(&listed.body, "recipient"), [email.as_str(); 3]);
    let by_customer = app
        .get(Admin, &format!("/v1/notifications?customer_id={customer}"))
        .await;
    by_customer.assert_status(200);
    assert_eq!(by_customer.body["items"].as_array().unwrap().len(), 5);
    let cancelled_items = app
        .get(Support, &format!("/v1/notifications?order_id={cancelled}"))
        .await;
    assert_eq!(
        field(&cancelled_items.body, "kind"),
        ["order_cancelled", "order_placed"]
    );
    app.get(Storefront, "/v1/notifications")
        .await
        .assert_problem(403, "forbidden");
    app.get(Analyst, "/v1/notifications")
        .await
        .assert_problem(403, "forbidden");
    app.get(Support, "/v1/notifications?order_id=nope")
        .await
        .assert_problem(400, "bad-query");

    // Replay: a new consumer delivers every message again; nothing is sent twice.
    drop(runner);
    s.js.get_stream(&s.relay_config.stream)
        .await
        .unwrap()
        .delete_consumer("notification")
        .await
        .unwrap();
    let runner = s.runner(&app, Some(mailer)).await;
    crate::nats::redeliver_all(&runner.runner, events as usize).await;
    assert_eq!(sink.mails().len(), 5);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM notification.notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 5);
    s.cleanup().await;
}

#[tokio::test]
async fn without_smtp_notifications_are_only_recorded() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (customer, email) = customer(&app).await;
    let (shipped, _) = orders(&app, &customer).await;
    let events = app.event_count().await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let runner = s.runner(&app, None).await;
    notify_until(
        &runner,
        &app,
        "SELECT count(*) FROM notification.processed",
        events,
    )
    .await;

    let listed = app
        .get(Support, &format!("/v1/notifications?order_id={shipped}"))
        .await;
    listed.assert_status(200);
    assert_eq!(
        field(&listed.body, "kind"),
        ["payment_refunded", "order_shipped", "order_placed"]
    );
    assert_eq!(field(&listed.body, "status"), ["recorded"; 3]);
    assert_eq!(field(&listed.body, "recipient"), [email.as_str(); 3]);
    let item = &listed.body["items"][0];
    assert_eq!(
        item["subject"],
        format!("Refund of 5.00 EUR for your order {shipped}")
    );
    assert!(item["body"].as_str().unwrap().contains("dented mug"));
    assert_eq!(item["customer_id"], customer.as_str());
    assert!(item["error"].is_null());
    let all = app
        .get(
            Support,
            &format!("/v1/notifications?customer_id={customer}"),
        )
        .await;
    assert_eq!(all.body["items"].as_array().unwrap().len(), 5);
    s.cleanup().await;
}

#[tokio::test]
async fn an_smtp_outage_delays_the_mail_records_every_attempt_and_ends_when_the_server_is_back() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    // The first two connections are turned away (421), then the server is back.
    let sink = SmtpSink::start_with(SinkConfig {
        refuse_first: 2,
        ..SinkConfig::default()
    })
    .await;
    let (customer, _) = customer(&app).await;
    let order = app.place_order(&customer).await;
    let events = app.event_count().await;
    let s = setup(&app).await;
    s.publish_all(&app).await;
    let mailer = Mailer::new(&sink.url, "orders@ordo.invalid").unwrap();
    let runner = s.runner(&app, Some(mailer)).await;
    notify_until(
        &runner,
        &app,
        "SELECT count(*) FROM notification.processed",
        events,
    )
    .await;

    // The event was acknowledged when it was recorded: no dead letter, one mail.
    let letters: i64 = sqlx::query_scalar("SELECT count(*) FROM workers.dead_letters")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(letters, 0);
    assert_eq!(sink.mails().len(), 1);
    let listed = app
        .get(Support, &format!("/v1/notifications?order_id={order}"))
        .await;
    assert_eq!(field(&listed.body, "status"), ["sent"]);
    let attempts: Vec<(i32, bool, Option<String>)> =
        sqlx::query_as("SELECT attempt, ok, error FROM notification.attempts ORDER BY attempt")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert!(attempts[..2]
        .iter()
        .all(|(_, ok, error)| !ok && error.as_deref().is_some_and(|e| e.contains("421"))));
    assert_eq!((attempts[2].0, attempts[2].1), (3, true));
    // The mail sender's queue in the workers' status.
    let notification = worker_status(&app, "notification").await;
    assert_eq!(
        notification["outbox"],
        json!({"pending": 0, "oldest_pending_seconds": 0.0, "done": 1, "failed": 0})
    );
    s.cleanup().await;
}

/// `GET /v1/workers` counts the mail queue without reading the notifications already sent:
/// they are kept for good, so counting them would cost more on every call as the shop's
/// history grows. The sent total follows every change of status, once per notification.
#[tokio::test]
async fn the_mail_queue_status_counts_sent_mail_without_reading_it() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let run = async |sql: &str| {
        sqlx::query(sql).execute(&app.pool).await.unwrap();
    };
    // Written pending, as the worker writes them; one refused address written failed.
    run(
        "INSERT INTO notification.notifications (id, event_id, kind, status)
         SELECT gen_random_uuid(), gen_random_uuid(), 'order_placed', 'pending'
           FROM generate_series(1, 5000)",
    )
    .await;
    run(
        "INSERT INTO notification.notifications (id, event_id, kind, status, error)
         VALUES (gen_random_uuid(), gen_random_uuid(), 'order_placed', 'failed', 'refused')",
    )
    .await;
    // The sender records 4,990 sent in one statement, then three failed.
    let some_pending = |n: u32| {
        format!(
            "WHERE id IN (SELECT id FROM notification.notifications
                           WHERE status = 'pending' ORDER BY id LIMIT {n})"
        )
    };
    run(&format!(
        "UPDATE notification.notifications SET status = 'sent' {}",
        some_pending(4990)
    ))
    .await;
    run(&format!(
        "UPDATE notification.notifications SET status = 'failed' {}",
        some_pending(3)
    ))
    .await;
    // A lease ran out while one mail was on its way: a second sender records it sent again.
    run(
        "UPDATE notification.notifications SET status = 'sent', sent_at = now()
          WHERE id = (SELECT id FROM notification.notifications WHERE status = 'sent' ORDER BY id LIMIT 1)",
    )
    .await;
    // Two customers erased: their pending mail is skipped. An operator deletes one sent.
    run(&format!(
        "UPDATE notification.notifications SET status = 'skipped' {}",
        some_pending(2)
    ))
    .await;
    run("DELETE FROM notification.notifications
          WHERE id = (SELECT id FROM notification.notifications WHERE status = 'sent' ORDER BY id DESC LIMIT 1)")
    .await;

    let outbox = worker_status(&app, "notification").await["outbox"].clone();
    assert_eq!(
        (&outbox["pending"], &outbox["done"], &outbox["failed"]),
        (&json!(5), &json!(4989), &json!(4)),
        "{outbox}"
    );
    assert!(outbox["oldest_pending_seconds"].as_f64().unwrap() >= 0.0);

    run("ANALYZE notification.notifications").await;
    let (read, explained) = rows_read_by(
        &app.pool,
        ordo_workers::notification::QUEUE,
        "notifications",
    )
    .await;
    assert!(
        read <= 9.0,
        "the mail queue's counts read {read} notifications of 5,000, 9 of them pending or failed: {explained}"
    );
}

#[tokio::test]
async fn the_list_of_every_channel_is_the_newest_of_all_and_reads_about_a_page_per_channel() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let listed_ids = async || {
        let listed = app.get(Support, "/v1/notifications").await;
        listed.assert_status(200);
        field(&listed.body, "id")
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert!(listed_ids().await.is_empty(), "no notifications yet");

    // 2,000 notifications in each of three channels; four at a time share their time (a
    // worker's batch shares its transaction's), and so do the channels, so that the order
    // between them is the ids'.
    sqlx::query(
        "INSERT INTO notification.notifications (id, event_id, kind, channel, status, created_at)
         SELECT gen_random_uuid(), gen_random_uuid(), 'order_placed', c, 'recorded',
                now() - make_interval(secs => g / 4)
           FROM generate_series(1, 2000) g, unnest(ARRAY['default', 'eu', 'us']) c",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE notification.notifications")
        .execute(&app.pool)
        .await
        .unwrap();

    // A global key without a filter: the newest 100 of them all, as a sort of the whole
    // table orders them.
    let sorted: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM notification.notifications
          ORDER BY created_at DESC, id DESC LIMIT 100",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(listed_ids().await, sorted);

    // Read through the channels' index, never by scanning the table ...
    let (listed, reads) = reads_of(&app, "notification.notifications", async |one| {
        let keys = ordo_commands::privacy::Keyring::new(one.clone(), None);
        ordo_workers::notification::list(one, &keys, None, None, None, 100)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(listed.items.len(), 100);
    assert_eq!(
        reads.scanned, 0,
        "the list of every channel scanned the table"
    );
    // ... about 100 rows per channel, not the 6,000 that the sort of the whole table read.
    let explained: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        ordo_workers::notification::NEWEST.as_str()
    ))
    .bind(100_i64)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let read = rows_read(&explained[0]["Plan"], "notifications");
    assert!(
        read <= 400.0,
        "the newest 100 of three channels read {read} notifications of 6,000: {explained}"
    );
}

#[tokio::test]
async fn a_sender_killed_between_sending_and_recording_sends_again_with_the_same_message_id() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    // The server takes the first mail and never answers: the sender is killed while it
    // waits, after the mail left and before its outcome was recorded.
    let sink = SmtpSink::start_with(SinkConfig {
        hang_after_first_mail: true,
        ..SinkConfig::default()
    })
    .await;
    let (customer, _) = customer(&app).await;
    let order = app.place_order(&customer).await;
    let events = app.event_count().await;
    let s = setup(&app).await;
    s.publish_all(&app).await;
    let mailer = Mailer::new(&sink.url, "orders@ordo.invalid").unwrap();
    let worker = s.runner(&app, None).await;
    let recorded = Notifier {
        runner: WorkerRunner::connect(
            app.pool.clone(),
            Notification::new(true),
            s.worker_config.clone(),
        )
        .await
        .unwrap(),
        sender: None,
    };
    drop(worker);
    notify_until(
        &recorded,
        &app,
        "SELECT count(*) FROM notification.processed",
        events,
    )
    .await;
    let lease = Duration::from_secs(1);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let first = tokio::spawn(quick_sender(&app, mailer.clone(), lease).run(stopped));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sink.mails().is_empty() {
        assert!(Instant::now() < deadline, "the first mail never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.abort();
    let _ = first.await;
    let (status, attempts): (String, i64) = sqlx::query_as(
        "SELECT n.status, (SELECT count(*) FROM notification.attempts a WHERE a.notification_id = n.id)
           FROM notification.notifications n",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), attempts),
        ("pending", 0),
        "sent, not recorded"
    );

    // A new sender, once the lease ran out, sends it again: at least once, never lost.
    let again = Notifier {
        runner: recorded.runner,
        sender: Some(quick_sender(&app, mailer, lease)),
    };
    notify_until(
        &again,
        &app,
        "SELECT count(*) FROM notification.notifications WHERE status = 'sent'",
        1,
    )
    .await;
    let mails = sink.mails();
    assert_eq!(mails.len(), 2, "the mail went out twice");
    let ids: Vec<String> = mails
        .iter()
        .map(|m| m.header("Message-ID").unwrap())
        .collect();
    assert_eq!(
        ids[0], ids[1],
        "with one Message-ID, for the receiver to drop the repeat"
    );
    let event_id = crate::workers::webhooks::placed_event_id(&app, &order).await;
    assert_eq!(ids[0], format!("<{event_id}.order_placed@ordo.invalid>"));
    let attempts: Vec<(i32, bool)> =
        sqlx::query_as("SELECT attempt, ok FROM notification.attempts")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(attempts, [(2, true)], "the killed attempt left no record");
    s.cleanup().await;
}

#[tokio::test]
async fn a_replay_with_reprocess_mails_again_from_the_chosen_event_on_only() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let sink = SmtpSink::start().await;
    let (customer, _) = customer(&app).await;
    let (shipped, cancelled) = orders(&app, &customer).await;
    let events = app.event_count().await;

    let s = setup(&app).await;
    s.publish_all(&app).await;
    let mailer = Mailer::new(&sink.url, "orders@ordo.invalid").unwrap();
    let runner = s.runner(&app, Some(mailer.clone())).await;
    let processed = "SELECT count(*) FROM notification.processed";
    notify_until(&runner, &app, processed, events).await;
    assert_eq!(sink.mails().len(), 5);
    drop(runner);

    // From the refund on: the refund and the cancellation after it are mailed again.
    let refund: i64 = sqlx::query_scalar(
        "SELECT global_position FROM event_store.events WHERE event_type = 'payment.refunded'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let admin = WorkersAdmin::new(s.worker_config.clone());
    let (_, forgotten) = admin
        .replay(
            &app.pool,
            "notification",
            ReplayFrom::Position(refund),
            true,
        )
        .await
        .unwrap();
    let after_refund: i64 =
        sqlx::query_scalar("SELECT count(*) FROM event_store.events WHERE global_position >= $1")
            .bind(refund)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        forgotten as i64, after_refund,
        "the events from the refund on"
    );
    let runner = s.runner(&app, Some(mailer)).await;
    notify_until(&runner, &app, processed, events).await;

    let mails = sink.mails();
    let mut again: Vec<String> = mails[5..]
        .iter()
        .map(|m| m.header("Subject").unwrap())
        .collect();
    again.sort();
    assert_eq!(
        again,
        [
            format!("Refund of 5.00 EUR for your order {shipped}"),
            format!("Your order {cancelled} has been cancelled"),
        ]
    );
    let listed = app
        .get(Support, &format!("/v1/notifications?order_id={shipped}"))
        .await;
    assert_eq!(
        field(&listed.body, "kind"),
        [
            "payment_refunded",
            "payment_refunded",
            "order_shipped",
            "order_placed"
        ],
        "each sending is recorded"
    );

    // A plain replay afterwards still repeats nothing.
    drop(runner);
    admin
        .replay(&app.pool, "notification", ReplayFrom::Position(1), false)
        .await
        .unwrap();
    let runner = s.runner(&app, None).await;
    crate::nats::redeliver_all(&runner.runner, events as usize).await;
    assert_eq!(sink.mails().len(), 7);

    // Analytics' effects are sums: repeating them is refused, over HTTP too.
    assert!(matches!(
        admin
            .replay(&app.pool, "analytics", ReplayFrom::Position(1), true)
            .await,
        Err(OpsError::CannotReprocess(_))
    ));
    let refused = app
        .post(
            Admin,
            "/v1/workers/analytics/replay",
            json!({"from_position": 1, "reprocess": true}),
        )
        .await;
    refused.assert_problem(422, "validation");
    assert_eq!(refused.body["errors"][0]["field"], "reprocess");
    s.cleanup().await;
}

#[tokio::test]
async fn events_that_send_no_mail_are_recorded_together_and_a_poison_one_alone() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let (first, email) = customer(&app).await;
    customer(&app).await;
    customer(&app).await;
    let order = app.place_order(&first).await;
    let s = setup(&app).await;
    s.publish_all(&app).await;
    let runner = s.runner(&app, None).await;

    // The three registrations and the order: one fetch, one batch.
    assert_eq!(runner.fetch_once().await, 4);
    let (processed, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT p.processed_at) FROM notification.processed p
           JOIN event_store.events e USING (event_id) WHERE e.event_type = 'customer.registered'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (processed, transactions),
        (3, 1),
        "the registrations in one transaction"
    );
    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM notification.customers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        contacts, 3,
        "each customer's contact details, recorded together"
    );
    let listed = app
        .get(Support, &format!("/v1/notifications?order_id={order}"))
        .await;
    assert_eq!(field(&listed.body, "kind"), ["order_placed"]);
    assert_eq!(field(&listed.body, "recipient"), [email.as_str()]);

    // A registration that cannot be read, beside a good one: the good one is recorded, the
    // poison is dead-lettered alone.
    customer(&app).await;
    s.publish_all(&app).await;
    let subject = format!("{}.customer.registered", s.relay_config.subject_prefix);
    let mut poison = async_nats::HeaderMap::new();
    poison.insert("ce-id", uuid::Uuid::new_v4().to_string().as_str());
    s.js.publish_with_headers(subject, poison, "{\"not\": \"a customer\"}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(runner.fetch_once().await, 2);
    let contacts: i64 = sqlx::query_scalar("SELECT count(*) FROM notification.customers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(contacts, 4);
    let letters: Vec<String> =
        sqlx::query_scalar("SELECT error FROM workers.dead_letters WHERE worker = 'notification'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(letters.len(), 1, "only the poison: {letters:?}");
    s.cleanup().await;
}

#[tokio::test]
async fn the_orders_of_many_customers_in_one_batch_are_each_written_to_their_own_customer() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let mut expected = Vec::new();
    for _ in 0..4 {
        let (id, email) = customer(&app).await;
        for _ in 0..2 {
            let order = app.place_order(&id).await;
            expected.push((order, email.clone()));
        }
    }
    let s = setup(&app).await;
    s.publish_all(&app).await;
    let runner = s.runner(&app, None).await;

    // The registrations and the orders, interleaved: one fetch, one batch, one transaction.
    assert_eq!(runner.fetch_once().await, 12);
    let (written, transactions): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT created_at) FROM notification.notifications",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (written, transactions),
        (8, 1),
        "eight notifications, written together"
    );
    for (order, email) in &expected {
        let listed = app
            .get(Support, &format!("/v1/notifications?order_id={order}"))
            .await;
        assert_eq!(field(&listed.body, "kind"), ["order_placed"], "{order}");
        assert_eq!(
            field(&listed.body, "recipient"),
            [email.as_str()],
            "{order}"
        );
        assert_eq!(field(&listed.body, "status"), ["recorded"], "{order}");
    }
    s.cleanup().await;
}

/// The worker's look-up of recipients, planned while it knew a few hundred customers, still
/// reads by index once it knows many. PostgreSQL caches a generic plan for a statement once
/// that costs no more than planning each run afresh, and keeps it until the table is
/// analyzed: in a run of orders interleaved with registrations, the plan cached for 400 to
/// 1,500 recipients (a sequential scan, rightly then) went on reading every recipient for
/// every batch. Here the connection asks for the generic plan outright, so that the test
/// does not depend on the planner's costs. Without the batch's `enable_seqscan = off`, a
/// batch of ten orders read all 20,000 recipients.
#[tokio::test]
async fn recipients_are_still_read_by_index_once_there_are_many() {
    let app = spawn_app_with(|c| c.roles = vec![ProcessRole::Api]).await;
    let mut customers = Vec::new();
    for _ in 0..20 {
        customers.push(customer(&app).await.0);
    }
    for id in &customers {
        app.place_order(id).await;
    }
    let s = setup(&app).await;
    s.publish_all(&app).await;
    // One connection, so that the worker's statements are all cached on it.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::query("SET plan_cache_mode = force_generic_plan")
                    .execute(conn)
                    .await
                    .map(drop)
            })
        })
        .connect(&app.database_url)
        .await
        .unwrap();
    let runner = WorkerRunner::connect(
        one.clone(),
        Notification::new(false),
        s.worker_config.clone(),
    )
    .await
    .unwrap();
    let others = |n: i64| {
        sqlx::query(
            "INSERT INTO notification.customers (customer_id, email, name)
             SELECT gen_random_uuid(), 'someone@example.com', 'Someone' FROM generate_series(1, $1)",
        )
        .bind(n)
        .execute(&app.pool)
    };
    // The registrations, then the orders among some 600 recipients: the look-up's plan is
    // made then.
    others(600).await.unwrap();
    for _ in 0..4 {
        assert_eq!(runner.step(10, Duration::from_secs(5)).await.unwrap(), 10);
    }

    others(20_000).await.unwrap();
    for id in &customers[..10] {
        app.place_order(id).await;
    }
    s.publish_all(&app).await;
    let before = rows_scanned(&one, "notification.customers").await;
    assert_eq!(runner.step(10, Duration::from_secs(5)).await.unwrap(), 10);
    let scanned = rows_scanned(&one, "notification.customers").await - before;
    assert!(
        scanned < 20_000,
        "a batch of ten orders read {scanned} rows of the recipients by sequential scan"
    );
    let written: i64 = sqlx::query_scalar("SELECT count(*) FROM notification.notifications")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(written, 30);
    one.close().await;
    s.cleanup().await;
}
