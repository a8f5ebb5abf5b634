//! Sockets: opened per container, closed with their connections, stray
//! ones removed, and a cap on concurrent connections.

use std::time::Duration;

use super::*;
use crate::egress::EgressError;

#[tokio::test]
async fn close_removes_the_socket_and_ends_live_tunnels() {
    let h = Harness::new().await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);
    let mut t = connect(&h.sock, &format!("allowed.test:{port}")).await;
    assert_eq!(t.echo(b"x").await, b"x");
    let mut idle = UnixStream::connect(&h.sock).await.unwrap();

    h.proxy.close(CONTAINER);
    assert!(!h.sock.exists());
    assert!(h.proxy.open_containers().is_empty());
    assert!(t.ends().await, "the live tunnel ends");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "an idle connection ends"
    );
    assert!(UnixStream::connect(&h.sock).await.is_err());
    assert_eq!(h.proxy.report(CONTAINER), Default::default());
}

#[tokio::test]
async fn open_is_idempotent_replaces_stale_files_and_checks_names() {
    let h = Harness::new().await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);
    let mut t = connect(&h.sock, &format!("allowed.test:{port}")).await;
    assert_eq!(h.proxy.open(CONTAINER, POOL).await.unwrap(), h.sock);
    assert_eq!(
        t.echo(b"kept").await,
        b"kept",
        "opening again keeps connections"
    );
    assert_eq!(h.proxy.report(CONTAINER).reached.len(), 1, "and the record");

    let stale = h.proxy.socket_path("us-semi-2").unwrap();
    std::fs::write(&stale, "left by a crash").unwrap();
    assert_eq!(h.proxy.open("us-semi-2", POOL).await.unwrap(), stale);
    assert_eq!(
        connect(&stale, &format!("allowed.test:{port}"))
            .await
            .status_line(),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(h.proxy.open_containers(), [CONTAINER, "us-semi-2"]);

    for bad in ["", "../etc", "A", "a/b", "a.sock", "-a", &"a".repeat(64)] {
        assert!(
            matches!(
                h.proxy.open(bad, POOL).await,
                Err(EgressError::ContainerName(_))
            ),
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn retain_closes_the_rest_and_removes_stray_sockets() {
    let h = Harness::new().await;
    let other = h.proxy.open("us-semi-2", POOL).await.unwrap();
    let dir = h.sock.parent().unwrap().to_path_buf();
    // A socket an earlier agent left behind.
    let stray = dir.join("us-semi-old.sock");
    drop(std::os::unix::net::UnixListener::bind(&stray).unwrap());
    let not_a_socket = dir.join("notes.sock");
    std::fs::write(&not_a_socket, "").unwrap();

    h.proxy.retain(&|name| name == CONTAINER);
    assert_eq!(h.proxy.open_containers(), [CONTAINER]);
    assert!(h.sock.exists());
    assert!(!other.exists());
    assert!(!stray.exists());
    assert!(not_a_socket.exists(), "only sockets are removed");
    assert!(h.dir.path().join("hosts").exists());
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once() {
    let h = Harness::with(|c| c.max_connections_per_container = 2, true).await;
    let port = h.echo.port();
    h.allow(&["allowed.test"], &[port], None);
    let mut tunnel = connect(&h.sock, &format!("allowed.test:{port}")).await;
    let _idle = UnixStream::connect(&h.sock).await.unwrap();
    // Let the accept loop take both.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut third = UnixStream::connect(&h.sock).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(2), third.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "refused: {read:?}");
    assert!(
        h.metrics().contains(
            r#"unsandbox_egress_connections_total{pool="default/semi",outcome="too_many_connections"} 1"#
        )
    );

    // A tunnel holds its place until it ends.
    assert_eq!(tunnel.echo(b"x").await, b"x");
    drop(tunnel);
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut probe = UnixStream::connect(&h.sock).await.unwrap();
        let req = format!("CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n");
        probe.write_all(req.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        if probe.read_exact(&mut head).await.is_ok() {
            assert_eq!(&head, b"HTTP/1.1 200");
            freed = true;
            break;
        }
    }
    assert!(freed, "the place of the ended tunnel is free again");
}
