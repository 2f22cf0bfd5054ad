//! The device rate limit: an enrolled device whose signed requests outrun its budget is answered
//! `429 rate_limited` with a `Retry-After`, before anything is written (its nonce included); its
//! budget refills with time; other devices keep theirs; requests that do not verify, and those of
//! a device being registered, spend nothing.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions; a panic is the failure report"
)]

use crate::common;

use common::{
    Answer, LogCapture, TestBroker, TestDevice, database, insert_member, sample, scrape,
    workspace_with_admin,
};
use latchkey_core::keys::BrokerSecretKey;
use latchkey_server::rate_limit::DeviceRateLimit;
use latchkey_server::{Broker, Metrics};
use serde_json::{Value, json};

/// A broker limiting devices to `burst` requests at once and `per_second` a second, with its
/// metrics served; returns it and the metrics' base URL.
async fn limited_broker(per_second: u32, burst: u32) -> (TestBroker, String) {
    let limit = DeviceRateLimit::new(per_second, burst).expect("a valid limit");
    let metrics = Metrics::new();
    let scrape_at = common::serve_metrics(metrics.clone()).await;
    let broker = TestBroker::start_with(|store, clock, _| {
        Broker::new(store, BrokerSecretKey::generate().expect("broker key"))
            .with_clock(clock)
            .with_metrics(metrics)
            .with_device_rate_limit(Some(limit))
    })
    .await;
    (broker, scrape_at)
}

async fn execute(broker: &TestBroker, request: reqwest::Request) -> Answer {
    Answer::of(broker.http.execute(request).await.expect("request reaches the broker")).await
}

/// `GET /v1/me` signed by `device` now.
async fn me(broker: &TestBroker, device: &TestDevice) -> Answer {
    execute(broker, broker.signed(device, "GET", "/v1/me", None).build().unwrap()).await
}

/// A signed `POST /v1/agents` creating an agent called `name`, not sent yet.
fn create_agent(broker: &TestBroker, device: &TestDevice, name: &str) -> reqwest::Request {
    let body = json!({"name": name});
    broker.signed(device, "POST", "/v1/agents", Some(&body)).build().unwrap()
}

async fn agents_in(broker: &TestBroker, device: &TestDevice) -> i64 {
    let db = database(broker).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM agents WHERE workspace_id = $1")
        .bind(device.workspace.to_string())
        .fetch_one(&db)
        .await
        .unwrap();
    db.close().await;
    count
}

fn assert_rate_limited(answer: &Answer, retry_after: &str, why: &str) {
    assert_eq!(
        (answer.status, answer.body["code"].as_str()),
        (429, Some("rate_limited")),
        "{why}: {}",
        answer.body
    );
    assert_eq!(answer.retry_after.as_deref(), Some(retry_after), "{why}: whole seconds to wait");
    let message = answer.body["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("wait {retry_after} second")) && message.contains("remove"),
        "{why}: the message says how long to wait, and what to do if nobody sent them: {message}"
    );
}

#[tokio::test]
async fn a_device_over_its_burst_is_refused_before_anything_is_written() {
    let logs = LogCapture::default();
    // This test's runtime is single-threaded, so the broker's tasks log through this capture.
    let _guard = logs.install();
    let (broker, metrics) = limited_broker(1, 4).await;
    let admin = workspace_with_admin(&broker).await;
    let colleague = insert_member(&broker, &admin, "member").await;
    for n in 0..4 {
        let answer = execute(&broker, create_agent(&broker, &admin, &format!("bot {n}"))).await;
        assert_eq!(answer.status, 201, "request {n} is within the burst: {}", answer.body);
    }

    let refused = create_agent(&broker, &admin, "one too many");
    let signature = refused.headers()["signature"].to_str().unwrap().to_owned();
    let again = refused.try_clone().expect("a body in memory");
    let answer = execute(&broker, refused).await;
    assert_rate_limited(&answer, "1", "the fifth request of a burst of four");
    assert_eq!(agents_in(&broker, &admin).await, 4, "the refused creation wrote no agent");
    for _ in 0..5 {
        assert_rate_limited(&me(&broker, &admin).await, "1", "still over: reads too");
    }
    let answer = me(&broker, &colleague).await;
    assert_eq!(answer.status, 200, "another device of the workspace has its own budget");

    broker.clock.advance(1);
    let answer = execute(&broker, again).await;
    assert_eq!(
        answer.status, 201,
        "the very request refused, sent again once a request is back: its nonce was not \
         recorded, so it is no replay: {}",
        answer.body
    );
    assert_eq!(agents_in(&broker, &admin).await, 5);

    let text = scrape(&metrics).await;
    assert_eq!(
        sample(&text, "latchkey_device_requests_total{code=\"rate_limited\"}"),
        6.0,
        "each refusal is counted by its code"
    );
    broker.stop().await;

    let text = logs.text();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["fields"]["message"].as_str().is_some_and(|m| m.contains("device rate limit"))
        })
        .collect();
    assert_eq!(lines.len(), 1, "six refusals in a minute log one line:\n{text}");
    let line = &lines[0];
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(
        (&line["fields"]["workspace"], &line["fields"]["member"], &line["fields"]["device"]),
        (&json!(admin.workspace), &json!(admin.member), &json!(admin.id)),
        "the line names whose device it is, so an admin can act"
    );
    let signature_value = signature.trim_start_matches("lk=:").trim_end_matches(':');
    assert!(!text.contains(signature_value), "no signature in the log");
}

#[tokio::test]
async fn the_budget_refills_with_time_up_to_the_burst() {
    let (broker, _) = limited_broker(2, 3).await;
    let admin = workspace_with_admin(&broker).await;
    for n in 0..3 {
        assert_eq!(me(&broker, &admin).await.status, 200, "request {n} of the burst");
    }
    assert_rate_limited(&me(&broker, &admin).await, "1", "the burst is spent");

    broker.clock.advance(1);
    for n in 0..2 {
        assert_eq!(me(&broker, &admin).await.status, 200, "a second gives back two ({n})");
    }
    assert_rate_limited(&me(&broker, &admin).await, "1", "and not three");

    broker.clock.advance(3600);
    for n in 0..3 {
        assert_eq!(me(&broker, &admin).await.status, 200, "an hour gives back the burst ({n})");
    }
    assert_rate_limited(&me(&broker, &admin).await, "1", "the burst, not 7200 requests");
    broker.stop().await;
}

#[tokio::test]
async fn requests_that_do_not_verify_and_registrations_spend_nothing() {
    let (broker, _) = limited_broker(1, 2).await;
    let admin = workspace_with_admin(&broker).await;
    // Someone without the admin device's key, sending in its name.
    let mut impostor = TestDevice::new(admin.workspace);
    impostor.id = admin.id;
    for n in 0..10 {
        let answer = me(&broker, &impostor).await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (401, Some("signature_invalid")),
            "request {n} is refused for its signature, not its device's budget: {}",
            answer.body
        );
    }
    let stranger = TestDevice::new(admin.workspace);
    for n in 0..10 {
        let answer = me(&broker, &stranger).await;
        assert_eq!(answer.body["code"], "unknown_device", "request {n}: {}", answer.body);
    }
    for n in 0..2 {
        let answer = me(&broker, &admin).await;
        assert_eq!(
            answer.status, 200,
            "request {n}: neither the forged requests nor the workspace creation (signed by a \
             device not enrolled yet) spent the admin device's budget: {}",
            answer.body
        );
    }
    assert_rate_limited(&me(&broker, &admin).await, "1", "its own two requests did");
    broker.stop().await;
}

#[tokio::test]
async fn the_default_lets_a_burst_of_3000_through() {
    let broker = TestBroker::start().await;
    let admin = workspace_with_admin(&broker).await;
    let burst = DeviceRateLimit::DEFAULT.burst();
    assert_eq!(burst, 3000);
    assert_all_answered(&broker, &admin, burst, "the default burst").await;
    let answer = me(&broker, &admin).await;
    assert_rate_limited(&answer, "1", "the 3001st, at 10 a second");
    assert!(
        answer.body["message"].as_str().unwrap().contains("3000 at once, then 10 a second"),
        "the message names the limit: {}",
        answer.body
    );
    broker.stop().await;
}

/// Sends `n` requests of `device`, four at a time, and checks that each is answered `200`.
async fn assert_all_answered(broker: &TestBroker, device: &TestDevice, n: u32, what: &str) {
    let quarter = |part: u32| async move {
        for i in 0..n / 4 {
            let answer = me(broker, device).await;
            let request = part * (n / 4) + i;
            assert_eq!(answer.status, 200, "request {request}, {what}: {}", answer.body);
        }
    };
    assert_eq!(n % 4, 0, "four equal parts");
    tokio::join!(quarter(0), quarter(1), quarter(2), quarter(3));
}

#[tokio::test]
async fn agents_calls_and_joining_spend_nothing_of_a_device_budget() {
    use common::agent_calls::{
        CountingUpstream, agent_get, broker_public_key, create_agent, create_shared_credential,
        register_standing_grant, shared_capability,
    };
    let (broker, _) = limited_broker(1, 1).await;
    let admin = workspace_with_admin(&broker).await;
    let (upstream, upstream_base) = CountingUpstream::start().await;
    // One request a second: the admin's device sets everything up a second apart.
    let (status, invite) = TestBroker::send(broker.signed(
        &admin,
        "POST",
        "/v1/invites",
        Some(&json!({"role": "member"})),
    ))
    .await;
    assert_eq!(status, 201, "{invite}");
    broker.clock.advance(1);
    let (agent, token) = create_agent(&broker, &admin, "ci-bot").await;
    broker.clock.advance(1);
    let credential =
        create_shared_credential(&broker, &admin, "github", &upstream_base, "ghp_limitSECRET")
            .await;
    broker.clock.advance(1);
    // The capability lasts as long as the grant: issued for the second the grant was made.
    let now = latchkey_server::clock::Clock::now(&*broker.clock);
    let grant = register_standing_grant(&broker, &admin, agent, credential).await;
    broker.clock.advance(1);
    assert_eq!(me(&broker, &admin).await.status, 200, "the device's one request of this second");
    assert_rate_limited(&me(&broker, &admin).await, "1", "the admin device is over its limit");

    let key = broker_public_key(&broker).await;
    let standing = shared_capability(
        &admin,
        &key,
        agent,
        credential,
        latchkey_core::capability::Reuse::Standing { grant },
        now,
    );
    for n in 0..5 {
        let (status, body) =
            TestBroker::send(agent_get(&broker, &token, "github", "/user", &standing)).await;
        assert_eq!(
            status, 200,
            "call {n}: an agent's calls are not its issuing device's requests: {body}"
        );
    }
    assert_eq!(upstream.hits(), 5);

    let joiner = TestDevice::new(admin.workspace);
    let body = json!({
        "code": invite["code"],
        "member": {"id": joiner.member, "name": "Grace"},
        "device": joiner.registration("laptop"),
    });
    let (status, joined) =
        TestBroker::send(broker.signed(&joiner, "POST", "/v1/join", Some(&body))).await;
    assert_eq!(status, 201, "joining needs nothing of the limited admin device: {joined}");
    assert_eq!(
        me(&broker, &joiner).await.status,
        200,
        "and spent nothing of the new device's budget of one"
    );
    assert_rate_limited(&me(&broker, &joiner).await, "1", "its own first request did");
    broker.stop().await;
}
