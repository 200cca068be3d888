//! Runaway clients: a slow client (slowloris) is disconnected and cannot hold the server, a
//! slow body times out, requests beyond the in-flight limit are refused at once, and
//! requests without a valid key are limited per client address.

use std::time::{Duration, Instant};

use ordo_api::Role::Storefront;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{order_body, spawn_app_with, TestApp};

fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `deadline`); what it sent.
async fn read_until_closed(tcp: &mut TcpStream, deadline: Instant) -> Option<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&seen).into_owned()),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected_and_others_are_served_meanwhile() {
    let app = spawn_app_with(|c| c.header_read_timeout_secs = 1).await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        // One header byte every 100 ms: slower than any real client, never finished.
        for _ in 0..200 {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slow
    });
    // Served while the slow client holds its connection.
    app.get(Storefront, "/v1/orders").await.assert_status(200);

    let mut slow = trickle.await.unwrap();
    let closed = read_until_closed(&mut slow, started + Duration::from_secs(30)).await;
    assert!(closed.is_some(), "the slow client was never disconnected");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_body_sent_too_slowly_times_out_with_a_408_problem() {
    let app = spawn_app_with(|c| c.request_timeout_secs = 1).await;
    let mut tcp = TcpStream::connect(addr(&app)).await.unwrap();
    let head = format!(
        "POST /v1/customers HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"email\":",
        app.key(Storefront)
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until_closed(&mut tcp, Instant::now() + Duration::from_secs(30))
        .await
        .expect("an answer within the deadline");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("urn:ordo:problem:request-timeout"),
        "{answer}"
    );
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_get_a_503_at_once() {
    // No projector: a read for a committed position waits its full read_wait, in flight.
    let app = spawn_app_with(|c| {
        c.roles = vec![ordo::ProcessRole::Api];
        c.max_in_flight = 1;
        c.read_wait_secs = 3;
    })
    .await;
    let customer = app.register_customer().await;
    let position = app
        .post(Storefront, "/v1/orders", order_body(&customer))
        .await
        .body["position"]
        .as_i64()
        .unwrap();
    // The waiting read: retried until it holds the one slot (it may find it taken by one
    // of the probes below), then in flight for read_wait.
    let waiting = {
        let (client, url, key) = (
            app.client.clone(),
            app.url(&format!("/v1/orders?min_position={position}")),
            app.key(Storefront).to_owned(),
        );
        tokio::spawn(async move {
            loop {
                let resp =
                    crate::helpers::read(client.get(&url).bearer_auth(&key).send().await.unwrap())
                        .await;
                if resp.problem() != "overloaded" {
                    return resp;
                }
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let resp = app.get(Storefront, "/v1/orders").await;
        if resp.status == 503 {
            resp.assert_problem(503, "overloaded");
            assert!(resp.header("retry-after").is_some());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never refused: {:?}",
            resp.status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    waiting
        .await
        .unwrap()
        .assert_problem(503, "projection-behind");
    app.get(Storefront, "/v1/orders").await.assert_status(200);
}

#[tokio::test]
async fn requests_without_a_valid_key_are_limited_per_client_address() {
    let app = spawn_app_with(|c| {
        c.anonymous_rate_limit = 5;
        c.rate_limit_window_secs = 60;
    })
    .await;
    // A known key is looked up (and charged) once, then cached.
    app.get(Storefront, "/v1/orders").await.assert_status(200);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let mut request = app.client.get(app.url("/v1/orders"));
        if i % 2 == 0 {
            request = request.bearer_auth(format!("ordo_made_up_{i}"));
        }
        let resp = crate::helpers::read(request.send().await.unwrap()).await;
        if resp.status == 429 {
            resp.assert_problem(429, "rate-limited");
            assert!(resp.header("retry-after").is_some());
        }
        statuses.push(resp.status.as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 401, 429, 429, 429, 429]);
    // The valid key is not held back by the address's anonymous quota.
    app.get(Storefront, "/v1/orders").await.assert_status(200);
    // Probes stay exempt.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}
