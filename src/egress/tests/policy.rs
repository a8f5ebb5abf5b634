//! What the pool's allowlist and the address check refuse, and how the
//! refusal reads.

use super::*;
use crate::egress::Denied;

#[tokio::test]
async fn a_host_not_in_the_allowlist_gets_403_with_the_reason_in_the_status_line() {
    let h = Harness::new().await;
    h.allow(&["allowed.test"], &[443], None);

    let t = connect(&h.sock, "denied.test:443").await;
    let sentence = "unsandbox egress: denied.test:443 is not in this pool's allowlist";
    assert_eq!(t.status_line(), format!("HTTP/1.1 403 {sentence}"));
    assert_eq!(t.header("x-unsandbox-egress-denied"), Some("not_allowed"));
    assert_eq!(t.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(t.body().await, format!("{sentence}\n"));

    let mut client = Client::new(&h.sock).await;
    let got = client.get("http://denied.test/x").await.unwrap();
    assert_eq!(got.status, 403);
    assert_eq!(
        got.reason.as_deref(),
        Some("unsandbox egress: denied.test:80 is not in this pool's allowlist")
    );
    assert_eq!(got.headers["x-unsandbox-egress-denied"], "not_allowed");

    let record = h.proxy.report(CONTAINER);
    assert_eq!(
        record.denied,
        [443, 80].map(|port| Denied {
            host: "denied.test".into(),
            port,
            reason: "not in this pool's allowlist".into(),
        })
    );
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(json["denied"][0]["reason"], "not in this pool's allowlist");
    assert!(json["budget_exceeded"].is_null());
    assert!(h.metrics().contains(
        r#"unsandbox_egress_connections_total{pool="default/semi",outcome="not_allowed"} 2"#
    ));
}

#[tokio::test]
async fn wildcards_admit_names_below_exact_names_only_themselves() {
    let h = Harness::new().await;
    let port = h.echo.port();
    h.allow(&["allowed.test", "*.wild.test"], &[port], None);
    let status = |host: &'static str| {
        let sock = h.sock.clone();
        async move {
            let t = connect(&sock, &format!("{host}:{port}")).await;
            t.status_line().split(' ').nth(1).unwrap().to_string()
        }
    };
    assert_eq!(status("a.wild.test").await, "200");
    assert_eq!(
        status("wild.test").await,
        "403",
        "a wildcard is for names below"
    );
    assert_eq!(status("allowed.test").await, "200");
    assert_eq!(
        status("other.allowed.test").await,
        "403",
        "an exact name has no subdomains"
    );
}

#[tokio::test]
async fn a_port_the_rule_does_not_list_is_refused() {
    let h = Harness::new().await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);
    let other = if port == 443 { 444 } else { 443 };
    let t = connect(&h.sock, &format!("allowed.test:{other}")).await;
    assert_eq!(t.header("x-unsandbox-egress-denied"), Some("not_allowed"));
}

#[tokio::test]
async fn names_resolving_to_non_public_addresses_are_refused() {
    // The production guard: no loopback escape.
    let h = Harness::with(|_| {}, false).await;
    let port = h.echo.port();
    h.allow(
        &[
            "allowed.test",
            "loopback.test",
            "private.test",
            "metadata.test",
            "mixed.test",
            "mapped.test",
        ],
        &[port],
        None,
    );
    for (host, reason) in [
        ("allowed.test", "resolves to 127.0.0.1, a loopback address"),
        ("loopback.test", "resolves to 127.0.0.1, a loopback address"),
        ("private.test", "resolves to 10.0.0.5, a private address"),
        (
            "metadata.test",
            "resolves to 169.254.169.254, the cloud metadata address",
        ),
        // One public address does not make up for a private one.
        ("mixed.test", "resolves to 10.1.2.3, a private address"),
        (
            "mapped.test",
            "resolves to ::ffff:192.168.1.1, a private address",
        ),
    ] {
        let t = connect(&h.sock, &format!("{host}:{port}")).await;
        assert_eq!(
            t.status_line(),
            format!("HTTP/1.1 403 unsandbox egress: {host}:{port} {reason}")
        );
        assert_eq!(
            t.header("x-unsandbox-egress-denied"),
            Some("forbidden_address")
        );
    }
    let record = h.proxy.report(CONTAINER);
    assert!(record.reached.is_empty());
    assert_eq!(record.denied.len(), 6);
    assert!(h.metrics().contains(
        r#"unsandbox_egress_connections_total{pool="default/semi",outcome="forbidden_address"} 6"#
    ));
}

#[tokio::test]
async fn the_test_escape_lets_loopback_through_and_nothing_else() {
    let h = Harness::new().await;
    let port = h.echo.port();
    h.allow(&["private.test", "allowed.test"], &[port], None);
    let t = connect(&h.sock, &format!("private.test:{port}")).await;
    assert_eq!(
        t.header("x-unsandbox-egress-denied"),
        Some("forbidden_address")
    );
    let t = connect(&h.sock, &format!("allowed.test:{port}")).await;
    assert_eq!(t.status_line(), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn ip_literals_are_refused() {
    let h = Harness::new().await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);
    let t = connect(&h.sock, &format!("127.0.0.1:{port}")).await;
    assert_eq!(
        t.status_line(),
        format!("HTTP/1.1 403 unsandbox egress: 127.0.0.1:{port} is not in this pool's allowlist")
    );
    let t = connect(&h.sock, &format!("[::1]:{port}")).await;
    assert_eq!(t.header("x-unsandbox-egress-denied"), Some("not_allowed"));

    // A rule the schema would reject still cannot name an address.
    h.allow(&["127.0.0.1"], &[port], None);
    let t = connect(&h.sock, &format!("127.0.0.1:{port}")).await;
    assert_eq!(t.header("x-unsandbox-egress-denied"), Some("ip_literal"));
    assert!(h.proxy.report(CONTAINER).reached.is_empty());
}

#[tokio::test]
async fn a_policy_change_applies_to_the_next_request() {
    let h = Harness::new().await;
    let port = h.echo.port();
    let authority = format!("allowed.test:{port}");
    let code = |t: Connected| t.status_line().split(' ').nth(1).unwrap().to_string();

    assert_eq!(
        code(connect(&h.sock, &authority).await),
        "403",
        "no policy, no egress"
    );
    h.allow(&["allowed.test"], &[port], None);
    let mut open = connect(&h.sock, &authority).await;
    assert_eq!(open.status_line(), "HTTP/1.1 200 OK");
    h.allow(&["other.test"], &[port], None);
    assert_eq!(code(connect(&h.sock, &authority).await), "403");
    h.proxy.set_policy(POOL, None);
    assert_eq!(code(connect(&h.sock, &authority).await), "403");
    assert_eq!(
        open.echo(b"still").await,
        b"still",
        "an open tunnel was admitted under the policy of its time"
    );
    h.proxy.set_policy("other/pool", Some(Egress::default()));
    h.allow(&["allowed.test"], &[port], None);
    assert_eq!(code(connect(&h.sock, &authority).await), "200");
}

#[tokio::test]
async fn operator_denied_ranges_apply_and_bad_settings_fail_clearly() {
    let h = Harness::with(|c| c.deny_cidrs = vec!["127.0.0.0/8".into()], true).await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);
    let t = connect(&h.sock, &format!("allowed.test:{port}")).await;
    assert_eq!(
        t.status_line(),
        format!(
            "HTTP/1.1 403 unsandbox egress: allowed.test:{port} resolves to 127.0.0.1, in the denied range 127.0.0.0/8"
        )
    );

    let dir = tempfile::tempdir().unwrap();
    let mut registry = Registry::default();
    let mut cfg = EgressConfig::new(dir.path().join("egress"));
    cfg.deny_cidrs = vec!["10.0.0.1/8".into()];
    let err = EgressProxy::new(cfg.clone(), &mut registry).err().unwrap();
    assert!(
        matches!(err, crate::egress::EgressError::DenyCidr(_)),
        "{err}"
    );
    cfg.deny_cidrs.clear();
    cfg.hosts_file = Some(dir.path().join("missing"));
    let err = EgressProxy::new(cfg, &mut registry).err().unwrap();
    assert_eq!(err.metric_label(), "hosts_file");
}
