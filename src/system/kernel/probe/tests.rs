use super::*;

/// A listener on loopback whose accept queue is full (backlog 0, one
/// connection queued, never accepted): the kernel drops further SYNs, so a
/// connect to it gets no answer, like a blackholed upstream.
fn full_listener() -> (OwnedFd, SocketAddrV4, std::net::TcpStream) {
    // SAFETY: plain socket calls on a descriptor owned at once.
    unsafe {
        let fd = OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0));
        let mut sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd.as_raw_fd(), &sin as *const _ as *const libc::sockaddr, len), 0);
        assert_eq!(libc::listen(fd.as_raw_fd(), 0), 0);
        assert_eq!(libc::getsockname(fd.as_raw_fd(), &mut sin as *mut _ as *mut libc::sockaddr, &mut len), 0);
        let addr = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, u16::from_be(sin.sin_port));
        let queued = std::net::TcpStream::connect(addr).unwrap();
        (fd, addr, queued)
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn health_threads() -> usize {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap().flatten();
    tasks.filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "gateway-health")).count()
}

/// Everything of the real probe in one test (its thread is counted):
/// answers, refusals, silence, a missing namespace, order, no descriptor
/// or thread left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connects_tell_up_refused_silent_and_missing_apart_and_leave_nothing() {
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = match open.local_addr().unwrap() {
        std::net::SocketAddr::V4(a) => a,
        _ => unreachable!(),
    };
    // Accepted and closed at once, so its queue never fills.
    std::thread::spawn(move || open.incoming().for_each(drop));
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        match l.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        }
    };
    let (_full, silent, _queued) = full_listener();
    let probe = KernelProbe::default();
    let jobs = vec![
        NsChecks { netns: None, upstreams: vec![up, closed, silent, up] },
        NsChecks { netns: Some("/nonexistent/netns/x".into()), upstreams: vec![up] },
        NsChecks { netns: None, upstreams: vec![] },
    ];
    let results = probe.check(jobs.clone(), Duration::from_millis(300)).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0][0], Ok(()));
    assert_eq!(results[0][1], Err(format!("TCP connect to {closed}: connection refused")));
    assert_eq!(results[0][2], Err(format!("TCP connect to {silent}: no answer within 300 ms")));
    assert_eq!(results[0][3], Ok(()), "in order, each its own");
    let missing = results[1][0].as_ref().unwrap_err();
    assert!(missing.starts_with("cannot open the namespace /nonexistent/netns/x: "), "{missing}");
    assert!(results[2].is_empty());
    assert_eq!(health_threads(), 1, "one long-lived thread");

    // More upstreams than sockets at once: all answered, in order.
    let many: Vec<SocketAddrV4> = (0..MAX_IN_FLIGHT * 2 + 7).map(|i| if i % 3 == 0 { closed } else { up }).collect();
    let results = probe.check(vec![NsChecks { netns: None, upstreams: many.clone() }], Duration::from_secs(5)).await;
    for (i, r) in results[0].iter().enumerate() {
        assert_eq!(r.is_ok(), i % 3 != 0, "{i}: {r:?}");
    }

    // Rounds leave no descriptor open (3 sockets a round would add 150).
    let before = open_fds();
    for _ in 0..50 {
        let r = probe.check(vec![NsChecks { netns: None, upstreams: vec![up, closed, silent] }], Duration::from_millis(20)).await;
        assert_eq!(r[0].iter().filter(|o| o.is_ok()).count(), 1);
    }
    let after = open_fds();
    assert!(after < before + 50, "descriptors leak: {before} before 50 rounds, {after} after");
    assert_eq!(health_threads(), 1, "still the same one thread");

    drop(probe);
    let start = Instant::now();
    while health_threads() > 0 {
        assert!(start.elapsed() < Duration::from_secs(10), "the thread ends with its probe");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn errors_read_as_sentences() {
    let addr: SocketAddrV4 = "10.80.0.2:443".parse().unwrap();
    assert_eq!(connect_error(addr, &io::Error::from_raw_os_error(libc::EHOSTUNREACH)), "TCP connect to 10.80.0.2:443: no route to host");
    assert_eq!(seconds(Duration::from_secs(5)), "5 s");
    assert_eq!(seconds(Duration::from_millis(1500)), "1500 ms");
}
