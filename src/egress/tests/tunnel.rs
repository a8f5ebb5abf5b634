//! `CONNECT` tunnels: relayed, counted, cut by the byte budget, ended
//! when idle.

use std::time::Duration;

use super::*;
use crate::egress::{BudgetKind, NetworkRecord, Reached};

#[tokio::test]
async fn a_tunnel_relays_both_ways_and_is_counted() {
    let h = Harness::new().await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);

    let mut t = connect(&h.sock, &format!("Allowed.Test.:{port}")).await;
    assert_eq!(t.status_line(), "HTTP/1.1 200 OK");
    assert_eq!(t.echo(b"hello").await, b"hello");
    assert_eq!(t.echo(&[7u8; 40_000]).await, vec![7u8; 40_000]);
    let mut again = connect(&h.sock, &format!("allowed.test:{port}")).await;
    assert_eq!(again.echo(b"abc").await, b"abc");

    assert_eq!(
        h.proxy.report(CONTAINER),
        NetworkRecord {
            reached: vec![Reached {
                host: "allowed.test".into(),
                port,
                connections: 2,
                bytes_sent: 40_008,
                bytes_received: 40_008,
            }],
            ..NetworkRecord::default()
        }
    );
    let metrics = h.metrics();
    assert!(
        metrics.contains(
            r#"unsandbox_egress_connections_total{pool="default/semi",outcome="allowed"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"unsandbox_egress_bytes_total{pool="default/semi",direction="sent"} 40008"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_byte_budget_cuts_every_tunnel_of_the_execution() {
    let h = Harness::new().await;
    let port = h.echo.port();
    let budget = EgressBudget {
        bytes: Some(1000),
        connections: None,
    };
    h.allow(&["allowed.test"], &[port], Some(budget));
    let authority = format!("allowed.test:{port}");

    let mut a = connect(&h.sock, &authority).await;
    let mut b = connect(&h.sock, &authority).await;
    assert_eq!(a.echo(&[1; 400]).await.len(), 400);
    assert!(
        !b.ends_within(Duration::from_millis(200)).await,
        "under budget, a quiet tunnel stays open"
    );
    // 800 used: 400 more would make 1200.
    a.stream.write_all(&[2; 400]).await.unwrap();
    assert!(a.ends().await, "the tunnel that went over is cut");
    assert!(b.ends().await, "so is every other tunnel of the execution");

    let record = h.proxy.report(CONTAINER);
    assert_eq!(record.budget_exceeded, Some(BudgetKind::Bytes));
    let r = &record.reached[0];
    assert_eq!(
        (r.connections, r.bytes_sent, r.bytes_received),
        (2, 400, 400),
        "nothing over the budget passed"
    );

    let refused = connect(&h.sock, &authority).await;
    assert_eq!(
        refused.status_line(),
        format!("HTTP/1.1 403 unsandbox egress: {authority} refused: byte budget exceeded")
    );
    assert_eq!(
        refused.header("x-unsandbox-egress-denied"),
        Some("byte_budget")
    );

    h.proxy.reset(CONTAINER);
    assert_eq!(h.proxy.report(CONTAINER), NetworkRecord::default());
    let mut fresh = connect(&h.sock, &authority).await;
    assert_eq!(fresh.echo(b"new execution").await, b"new execution");
}

#[tokio::test]
async fn the_connection_budget_refuses_the_next_connection() {
    let h = Harness::new().await;
    let port = h.echo.port();
    let budget = EgressBudget {
        bytes: None,
        connections: Some(2),
    };
    h.allow(&["allowed.test"], &[port], Some(budget));
    let authority = format!("allowed.test:{port}");
    for _ in 0..2 {
        assert_eq!(
            connect(&h.sock, &authority).await.status_line(),
            "HTTP/1.1 200 OK"
        );
    }
    let third = connect(&h.sock, &authority).await;
    assert_eq!(
        third.status_line(),
        format!("HTTP/1.1 403 unsandbox egress: {authority} refused: connection budget exceeded")
    );
    assert_eq!(
        third.header("x-unsandbox-egress-denied"),
        Some("connection_budget")
    );
    let record = h.proxy.report(CONTAINER);
    assert_eq!(record.budget_exceeded, Some(BudgetKind::Connections));
    assert_eq!(record.reached[0].connections, 2);
    assert_eq!(record.denied[0].reason, "connection budget exceeded");
    assert!(
        h.metrics().contains(
            r#"unsandbox_egress_connections_total{pool="default/semi",outcome="budget"} 1"#
        )
    );
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let h = Harness::with(|c| c.idle_timeout = Duration::from_millis(300), true).await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);
    let mut t = connect(&h.sock, &format!("allowed.test:{port}")).await;
    assert_eq!(t.echo(b"x").await, b"x");
    let started = std::time::Instant::now();
    assert!(t.ends().await);
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn an_upstream_that_refuses_is_a_502() {
    let h = Harness::new().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    h.allow(&["allowed.test"], &[closed], None);
    let t = connect(&h.sock, &format!("allowed.test:{closed}")).await;
    assert!(t.status_line().starts_with(&format!(
        "HTTP/1.1 502 unsandbox egress: allowed.test:{closed} could not be reached: 127.0.0.1:{closed}:"
    )), "{}", t.status_line());
    assert_eq!(
        t.header("x-unsandbox-egress-error"),
        Some("upstream_failed")
    );
    let record = h.proxy.report(CONTAINER);
    assert!(record.reached.is_empty());
    assert!(record.denied[0].reason.starts_with("could not be reached"));
}
