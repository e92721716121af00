//! The collector's webhooks end to end: a real `vigil collect` fed with reports, posting to
//! HTTP receivers run by the test. Each new thing is posted once (not on duplicates, repeats
//! or after a restart), with the right content; a receiver that is down or never answers
//! does not hold ingest, and what it costs is counted.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vigil_tests::collector::{endpoint, finding, key, public_endpoint, report, CollectorProcess};
use vigil_tests::process::{eventually, free_port};

/// A request the receiver got: its path and JSON body.
type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// An HTTP receiver on a loopback port answering 200 to every POST; what it got.
fn receiver() -> (u16, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Received = Arc::default();
    let kept = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let path = head.split(' ').nth(1).unwrap_or("").to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            let mut body = vec![0u8; length];
            if stream.read_exact(&mut body).is_err() {
                continue;
            }
            assert!(
                head.to_lowercase()
                    .contains("content-type: application/json"),
                "{head}"
            );
            let json = serde_json::from_slice(&body).expect("the webhook posts JSON");
            kept.lock().unwrap().push((path, json));
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, received)
}

/// What `path` received, in order.
fn at(received: &Received, path: &str) -> Vec<serde_json::Value> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(p, _)| p == path)
        .map(|(_, body)| body.clone())
        .collect()
}

/// Waits until `path` has received `n` posts, then a little longer to see that no more come.
fn settle(received: &Received, path: &str, n: usize) -> Vec<serde_json::Value> {
    eventually(&format!("{n} posts to {path}"), || {
        at(received, path).len() >= n
    });
    std::thread::sleep(Duration::from_millis(1_500));
    let got = at(received, path);
    assert_eq!(got.len(), n, "posts to {path}: {got:#?}");
    got
}

#[test]
fn each_new_finding_kind_and_newly_exposed_endpoint_is_posted_once() {
    let (port, received) = receiver();
    let mut collector = CollectorProcess::start(
        "webhook-once",
        &format!(
            "[[webhook]]\nurl = \"http://127.0.0.1:{port}/all\"\n\
             [[webhook]]\nurl = \"http://127.0.0.1:{port}/kinds\"\nevents = [\"new-finding-kind\"]\n"
        ),
    );
    let users = key("GET", "/users/{id}");
    let mut first = report("shop", "shop-1", 1, 1);
    first.findings = vec![
        finding(
            "enumeration",
            "guard:enumeration",
            users.clone(),
            Some("203.0.113.9"),
        ),
        finding(
            "enumeration",
            "guard:enumeration",
            users.clone(),
            Some("203.0.113.10"),
        ),
        finding(
            "probing",
            "guard:probing",
            key("GET", "/wp-login.php"),
            None,
        ),
    ];
    let mut internal = endpoint("GET", "/admin/stats", 2);
    internal.internal_only = true;
    first.endpoints = vec![public_endpoint("GET", "/users/{id}", 3, 3), internal];
    collector.apply(&first);
    let all = settle(&received, "/all", 3);
    let enumeration = &all[0];
    assert_eq!(enumeration["event"], "new-finding-kind");
    assert_eq!(enumeration["service"], "shop");
    assert_eq!(enumeration["instance"], "shop-1");
    assert_eq!(enumeration["kind"], "enumeration");
    assert_eq!(enumeration["source"], "guard:enumeration");
    assert_eq!(enumeration["method"], "GET");
    assert_eq!(enumeration["route"], "/users/{id}");
    assert_eq!(enumeration["client"], "203.0.113.9");
    assert_eq!(
        enumeration["text"],
        "Vigil: service shop reported a new kind of finding, `enumeration` on GET /users/{id}, client 203.0.113.9 (guard:enumeration): enumeration seen"
    );
    assert_eq!(all[1]["kind"], "probing");
    let exposed = &all[2];
    assert_eq!(exposed["event"], "newly-exposed");
    assert_eq!(exposed["route"], "/users/{id}");
    assert_eq!(exposed["exposure"], "public");
    assert_eq!(exposed["previous"], serde_json::Value::Null);
    assert_eq!(exposed["public_requests"], 3);
    assert!(
        exposed["text"]
            .as_str()
            .unwrap()
            .starts_with("Vigil: GET /users/{id} of service shop is now reached by public clients (not seen before; 3 public request(s)"),
        "{exposed}"
    );
    let kinds = settle(&received, "/kinds", 2);
    assert!(
        kinds.iter().all(|k| k["event"] == "new-finding-kind"),
        "{kinds:#?}"
    );

    // The same report again is a duplicate; a repeat of what is known says nothing new.
    assert_eq!(collector.send(&first).status, 200);
    let mut repeat = report("shop", "shop-2", 1, 1);
    repeat.findings = vec![finding(
        "enumeration",
        "guard:enumeration",
        users.clone(),
        None,
    )];
    let mut now_public = public_endpoint("GET", "/admin/stats", 1, 0);
    now_public.internal_only = true;
    repeat.endpoints = vec![public_endpoint("GET", "/users/{id}", 1, 1), now_public];
    collector.apply(&repeat);
    let all = settle(&received, "/all", 4);
    let admin = &all[3];
    assert_eq!(admin["route"], "/admin/stats");
    assert_eq!(admin["exposure"], "public-unauthenticated");
    assert_eq!(admin["previous"], "internal");
    assert_eq!(admin["internal_only"], true);
    assert!(
        admin["text"]
            .as_str()
            .unwrap()
            .contains("now answers public clients without credentials (was internal only;")
            && admin["text"]
                .as_str()
                .unwrap()
                .ends_with("it is listed as internal-only"),
        "{admin}"
    );

    // Public already, and now answered without credentials: news again, once.
    let mut unauthenticated = report("shop", "shop-1", 2, 2);
    unauthenticated.endpoints = vec![public_endpoint("GET", "/users/{id}", 2, 0)];
    collector.apply(&unauthenticated);
    let all = settle(&received, "/all", 5);
    assert_eq!(all[4]["route"], "/users/{id}");
    assert_eq!(all[4]["exposure"], "public-unauthenticated");
    assert_eq!(all[4]["previous"], "public");

    // A kind is new per service.
    let mut billing = report("billing", "billing-1", 1, 1);
    billing.findings = vec![finding(
        "enumeration",
        "guard:enumeration",
        key("GET", "/invoices/{id}"),
        None,
    )];
    collector.apply(&billing);
    let all = settle(&received, "/all", 6);
    assert_eq!(
        (&all[5]["service"], &all[5]["kind"]),
        (&"billing".into(), &"enumeration".into())
    );

    // What is known survives a restart: only the new kind is posted.
    collector.restart();
    let mut after = report("shop", "shop-1", 3, 3);
    after.findings = vec![
        finding("enumeration", "guard:enumeration", users.clone(), None),
        finding("probing", "guard:probing", key("GET", "/.env"), None),
        finding(
            "credential-stuffing",
            "guard:credential-stuffing",
            key("POST", "/login"),
            None,
        ),
    ];
    after.endpoints = vec![public_endpoint("GET", "/users/{id}", 2, 0)];
    collector.apply(&after);
    let all = settle(&received, "/all", 7);
    assert_eq!(all[6]["kind"], "credential-stuffing");
    settle(&received, "/kinds", 4);
    assert_eq!(
        collector.metric("vigil_collector_webhook_notifications_total{result=\"delivered\"}"),
        // Counted since the restart.
        2.0
    );
}

#[test]
fn a_receiver_that_is_down_or_never_answers_does_not_hold_ingest() {
    let down = free_port();
    // Accepts connections and never answers.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_port = hung.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in hung.incoming().flatten() {
            keep.lock().unwrap().push(stream);
        }
    });
    let collector = CollectorProcess::start(
        "webhook-down",
        &format!(
            "[[webhook]]\nurl = \"http://127.0.0.1:{down}/\"\ntimeout = \"1s\"\n\
             [[webhook]]\nurl = \"http://127.0.0.1:{hung_port}/\"\ntimeout = \"1s\"\n"
        ),
    );
    // More new kinds than a webhook's queue holds.
    let kinds = vigil_collector::webhook::QUEUE + 50;
    let mut flood = report("shop", "shop-1", 1, 1);
    flood.findings = (0..kinds)
        .map(|i| finding(&format!("kind-{i}"), "guard:g", key("GET", "/x"), None))
        .collect();
    let started = Instant::now();
    collector.apply(&flood);
    for sequence in 2..=11 {
        let mut more = report("shop", "shop-1", sequence, sequence);
        more.findings = vec![finding(
            &format!("later-{sequence}"),
            "guard:g",
            key("GET", "/x"),
            None,
        )];
        more.endpoints = vec![public_endpoint("GET", &format!("/new/{sequence}"), 1, 0)];
        collector.apply(&more);
    }
    // Each notification to either receiver takes seconds to give up; ingest waits for none.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "11 reports took {elapsed:?}"
    );
    let services = collector.get("/api/services");
    assert_eq!(services[0]["reports"], 11, "{services}");
    let dropped =
        collector.metric("vigil_collector_webhook_notifications_total{result=\"dropped\"}");
    // Each queue holds QUEUE; the task holds one more at most.
    assert!(
        dropped >= 2.0 * (kinds - vigil_collector::webhook::QUEUE - 1) as f64,
        "dropped {dropped}"
    );
    eventually("a notification to be given up", || {
        collector.metric("vigil_collector_webhook_notifications_total{result=\"failed\"}") >= 1.0
    });
    assert_eq!(
        collector.metric("vigil_collector_webhook_notifications_total{result=\"delivered\"}"),
        0.0
    );
    let logged = collector.logged();
    assert_eq!(
        logged.matches("a webhook's queue is full").count(),
        2,
        "one line per webhook:\n{logged}"
    );
    assert!(logged.contains("could not be delivered"), "{logged}");
    assert!(
        !held.lock().unwrap().is_empty(),
        "the hung receiver was tried"
    );
}
