//! Exactly once across a crash: the process dies after the command committed and before it
//! answered; the client's retry with the same key gets the answer, and no second order.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{fresh_database_url, order_body, read};

struct Server {
    child: Child,
    base: String,
}

impl Server {
    async fn start(database_url: &str, crash_after_commit: bool) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_ordo"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("ORDO_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("ORDO_LOG", "error")
            // Off the shared NATS server: the relay and the workers would use the default
            // streams, which no test may touch.
            .env("ORDO_ROLES", "api,projector,process-manager")
            .env(
                "ORDO_TEST_CRASH_AFTER_COMMIT",
                crash_after_commit.to_string(),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        while client
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn create_key(database_url: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ordo"))
        .args([
            "keys",
            "create",
            "--role",
            "storefront",
            "--name",
            "crash-test",
        ])
        .env("DATABASE_URL", database_url)
        .env("ORDO_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap();
    let key = key.trim_end_matches('\n');
    assert!(
        key.starts_with("ordo_") && !key.contains(char::is_whitespace),
        "stdout is the key alone"
    );
    key.to_owned()
}

#[tokio::test]
async fn a_crash_between_commit_and_answer_is_recovered_by_the_retry() {
    let database_url = fresh_database_url();
    let key = create_key(&database_url);
    let client = reqwest::Client::new();
    let post = |base: &str, path: &str, body: Value, idem: Option<&str>| {
        let mut req = client
            .post(format!("{base}{path}"))
            .bearer_auth(&key)
            .json(&body);
        if let Some(k) = idem {
            req = req.header("idempotency-key", k);
        }
        req.send()
    };

    let pool = {
        let server = Server::start(&database_url, false).await;
        let customer = read(
            post(
                &server.base,
                "/v1/customers",
                json!({"email": "c@example.com", "name": "C"}),
                None,
            )
            .await
            .unwrap(),
        )
        .await;
        customer.assert_status(201);
        drop(server);
        let customer_id = customer.id();

        // The first attempt commits, then the process aborts before answering.
        let crashing = Server::start(&database_url, true).await;
        let attempt = post(
            &crashing.base,
            "/v1/orders",
            order_body(&customer_id),
            Some("order-after-crash"),
        )
        .await;
        assert!(
            attempt.is_err(),
            "the client sees the connection drop, not an answer"
        );
        drop(crashing);

        let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
        let orders: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM event_store.events WHERE event_type = 'order.placed'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(orders, 1, "the command did commit before the crash");

        // The retry against a healthy process answers from the committed events.
        let server = Server::start(&database_url, false).await;
        let retry = read(
            post(
                &server.base,
                "/v1/orders",
                order_body(&customer_id),
                Some("order-after-crash"),
            )
            .await
            .unwrap(),
        )
        .await;
        retry.assert_status(201);
        assert_eq!(retry.header("idempotent-replayed"), Some("true"));
        assert_eq!(retry.body["version"], 1);
        let order_id = retry.id();
        assert_eq!(
            retry.header("location"),
            Some(format!("/v1/orders/{order_id}").as_str())
        );

        let again = read(
            post(
                &server.base,
                "/v1/orders",
                order_body(&customer_id),
                Some("order-after-crash"),
            )
            .await
            .unwrap(),
        )
        .await;
        assert_eq!(again.body, retry.body);
        let orders: Vec<String> = sqlx::query_scalar(
            "SELECT aggregate_id FROM event_store.events WHERE event_type = 'order.placed'",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(orders, [order_id], "still exactly one order");
        pool
    };
    pool.close().await;
    ordo_commands::db::drop_database(&database_url)
        .await
        .unwrap();
}
