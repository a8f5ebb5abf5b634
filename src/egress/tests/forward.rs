//! Plain HTTP requests with absolute URIs, forwarded.

use super::*;
use crate::egress::BudgetKind;

#[tokio::test]
async fn get_and_post_are_forwarded_and_counted() {
    let h = Harness::new().await;
    let port = h.http.port();
    h.allow(&["allowed.test"], &[port], None);
    let mut client = Client::new(&h.sock).await;

    let req = Request::get(format!("http://allowed.test:{port}/path?q=1"))
        .header("host", "elsewhere.test")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("connection", "keep-alive")
        .body(Full::default())
        .unwrap();
    let got = client.send(req).await.unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body,
        format!(
            "GET /path?q=1\nhost: allowed.test:{port}\nproxy-authorization: -\nconnection: -\n\n"
        ),
        "origin-form upstream, the admitted Host, no proxy credentials or hop-by-hop headers"
    );
    let first = got.body.len() as u64;

    let req = Request::post(format!("http://allowed.test:{port}/submit"))
        .body(Full::new(Bytes::from_static(b"a=1&b=2")))
        .unwrap();
    let got = client.send(req).await.unwrap();
    assert_eq!(got.status, 200);
    assert!(got.body.starts_with("POST /submit\n"), "{}", got.body);
    assert!(got.body.ends_with("\n\na=1&b=2"), "{}", got.body);

    let record = h.proxy.report(CONTAINER);
    let r = &record.reached[0];
    assert_eq!((r.host.as_str(), r.port), ("allowed.test", port));
    assert_eq!(r.connections, 2, "one connection per forwarded request");
    assert_eq!(r.bytes_sent, 7);
    assert_eq!(r.bytes_received, first + got.body.len() as u64);
}

#[tokio::test]
async fn what_a_forward_proxy_cannot_serve_is_a_400() {
    let h = Harness::new().await;
    h.allow(&["allowed.test"], &[80, 443], None);
    let mut client = Client::new(&h.sock).await;

    let got = client.get("/index.html").await.unwrap();
    assert_eq!(got.status, 400);
    assert_eq!(got.headers["x-unsandbox-egress-error"], "bad_request");
    assert!(got.body.contains("send absolute URIs"), "{}", got.body);

    let got = client.get("https://allowed.test/").await.unwrap();
    assert_eq!(got.status, 400);
    let reason = got.reason.unwrap();
    assert!(reason.contains("through CONNECT"), "{reason}");
    assert_eq!(got.body, format!("{reason}\n"));
    assert!(h.metrics().contains(
        r#"unsandbox_egress_connections_total{pool="default/semi",outcome="bad_request"} 2"#
    ));
    assert!(h.proxy.report(CONTAINER).reached.is_empty());
}

#[tokio::test]
async fn a_response_over_the_byte_budget_is_cut() {
    let h = Harness::new().await;
    let port = h.http.port();
    let budget = EgressBudget {
        bytes: Some(5000),
        connections: None,
    };
    h.allow(&["allowed.test"], &[port], Some(budget));
    let mut client = Client::new(&h.sock).await;
    let small = client
        .get(&format!("http://allowed.test:{port}/big?1000"))
        .await
        .unwrap();
    assert_eq!(small.body.len(), 1000);
    let big = client
        .get(&format!("http://allowed.test:{port}/big?100000"))
        .await;
    assert!(big.is_err(), "the body is cut, not completed");

    let record = h.proxy.report(CONTAINER);
    assert_eq!(record.budget_exceeded, Some(BudgetKind::Bytes));
    assert!(record.reached[0].bytes_received <= 5000);

    let mut client = Client::new(&h.sock).await;
    let refused = client
        .get(&format!("http://allowed.test:{port}/big?10"))
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    assert_eq!(refused.headers["x-unsandbox-egress-denied"], "byte_budget");
}
