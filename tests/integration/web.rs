//! The web page and its login, over real HTTP on the real binary, and in a
//! real browser (Debian's Chromium, headless, driven by Playwright).

use crate::support::*;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

crate::tests![
    the_page_and_the_api_need_a_login_once_a_user_exists needs [RealFixtures],
    a_browser_logs_in_reviews_an_alert_and_logs_out needs [RealFixtures, Browser],
];

const WAIT: Duration = Duration::from_secs(60);
/// The password the tests give their user: in `TEST_SECRETS`, so the suite
/// checks it never appears in a log or an answer.
const PASSWORD: &str = "Sup3r-s3cret";
const WRONG: &str = "WrongPa55word";

fn walking_config(fixtures: &Path) -> String {
    format!(
        "cameras:\n  - id: walk\n    url: file://{}\nprocessing:\n  detection:\n    model: {}\n    size: 320\n\
         alert_rules:\n  - name: person\n    conditions:\n      classes: [person]\n    cooldown: 5s\n\
         http:\n  listen: \"{{listen}}\"\n",
        fixtures.join("video/people_walking_640x480_15fps_10s.mp4").display(),
        fixtures.join("yolov8n/yolov8n.safetensors").display(),
    )
}

/// Runs `smart-cctv ARGS` on the service's config and data, with `stdin`.
fn cli(service: &Service, args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(service.config_path())
        .arg("--data-dir")
        .arg(service.data_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// An HTTP client that does not follow redirects, so they can be checked.
fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(20)).build()
}

/// Status, `Location`, `Set-Cookie` and body of any answer, 4xx and 5xx included.
fn send(request: ureq::Request, form: Option<&[(&str, &str)]>) -> (u16, String, String, String) {
    let answer = match form {
        Some(fields) => request.send_form(fields),
        None => request.call(),
    };
    let response = match answer {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("request failed: {e}"),
    };
    let header = |name| response.header(name).unwrap_or("").to_owned();
    let (status, location, cookie) = (response.status(), header("location"), header("set-cookie"));
    (status, location, cookie, response.into_string().unwrap_or_default())
}

fn the_page_and_the_api_need_a_login_once_a_user_exists() {
    let service = Service::start(&walking_config(&crate::fixtures::real()), &[]);
    service.wait_healthy(WAIT);
    let base = format!("http://{}", service.addr);
    let http = agent();
    let get = |path: &str, cookie: &str| send(http.get(&format!("{base}{path}")).set("Cookie", cookie), None);

    // No user yet: loopback stays open, as before the web page existed.
    assert_eq!(get("/", "").0, 200);
    assert!(get("/login", "").3.contains("No user exists yet"));

    let (ok, said) = cli(&service, &["user", "add", "ann"], &format!("{PASSWORD}\n"));
    assert!(ok, "{said}");
    let users = service.data_dir().join("users.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&users).unwrap().permissions().mode() & 0o777, 0o600);
    let stored = std::fs::read_to_string(&users).unwrap();
    assert!(stored.contains("$argon2id$") && !stored.contains(PASSWORD), "{stored}");
    let (ok, said) = cli(&service, &["user", "add", "bob"], "short\n");
    assert!(!ok && said.contains("shorter than"), "{said}");

    // Now every page and API route needs a session; scrapes and health do not.
    let (status, location, _, _) = get("/", "");
    assert_eq!((status, location.as_str()), (303, "/login"));
    assert_eq!(get("/alerts", "").1, "/login");
    assert_eq!(get("/api/alerts", "").0, 401);
    assert_eq!(get("/api/cameras/walk/latest.jpg", "").0, 401);
    assert_eq!(get("/metrics", "").0, 200);
    assert_eq!(get("/healthz", "").0, 200);

    let login = |password: &str, origin: &str| {
        let request = http.post(&format!("{base}/login")).set("Origin", origin);
        send(request, Some(&[("username", "ann"), ("password", password)]))
    };
    // Wrong credentials: 401, logged with the name and source, counted.
    let (status, _, cookie, page) = login(WRONG, &base);
    assert_eq!(status, 401);
    assert!(cookie.is_empty() && page.contains("Wrong user name or password"), "{page}");
    wait_for("the failure in the log", WAIT, || {
        service.log("app.log").contains("login failed user=ann from=127.0.0.1").then_some(())
    });
    let metrics = get("/metrics", "").3;
    assert!(metrics.contains("smart_cctv_login_failures_total{reason=\"bad_credentials\"} 1"), "{metrics}");
    // A login posted from another site is refused before it is tried.
    assert_eq!(login(PASSWORD, "http://evil.example").0, 403);

    let (status, location, set_cookie, _) = login(PASSWORD, &base);
    assert_eq!((status, location.as_str()), (303, "/"), "{set_cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    let session = set_cookie.split(';').next().unwrap().to_owned();

    let live = get("/", &session);
    assert_eq!(live.0, 200);
    assert!(live.3.contains("data-camera=\"walk\""), "{}", live.3);
    let jpeg = wait_for("the camera's latest frame", WAIT, || {
        let r = http.get(&format!("{base}/api/cameras/walk/latest.jpg?boxes=1")).set("Cookie", &session).call().ok()?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut bytes).ok()?;
        Some(bytes)
    });
    let frame = image::load_from_memory(&jpeg).unwrap();
    assert!(frame.width() >= 320, "{}", frame.width());
    assert_eq!(get("/api/cameras/nope/latest.jpg", &session).0, 404);

    // An alert, marked a false positive through the API.
    let id = wait_for("an alert", WAIT, || {
        let list: serde_json::Value = serde_json::from_str(&get("/api/alerts", &session).3).ok()?;
        list.as_array()?.last()?["id"].as_str().map(str::to_owned)
    });
    let mark = |cookie: &str, origin: &str| {
        let url = format!("{base}/api/alerts/{id}/false_positive");
        send(http.put(&url).set("Cookie", cookie).set("Origin", origin), None)
    };
    assert_eq!(mark("", &base).0, 401);
    assert_eq!(mark(&session, "http://evil.example").0, 403);
    let (status, _, _, review) = mark(&session, &base);
    assert_eq!(status, 200, "{review}");
    assert!(review.contains("\"false_positive\":true") && review.contains("\"by\":\"ann\""), "{review}");
    assert!(get(&format!("/alerts/{id}"), &session).3.contains("Not a false positive"));
    let (ok, analysis) = cli(&service, &["alerts", "analyze", "--json"], "");
    assert!(ok, "{analysis}");
    let analysis: serde_json::Value = serde_json::from_str(&analysis).unwrap();
    assert_eq!(analysis["reviews_per_rule"]["person"]["false_positives"], 1, "{analysis}");
    assert_eq!(analysis["reviews_per_camera"]["walk"]["reviewed"], 1, "{analysis}");

    for page in ["/alerts", "/system", "/config"] {
        let (status, _, _, body) = get(page, &session);
        assert_eq!(status, 200, "{page}: {body}");
    }
    // The CPU and RSS chart, once two samples 10 s apart exist.
    wait_for("the CPU and RSS chart", WAIT, || get("/system", &session).3.contains("<svg").then_some(()));

    // An API token works on its own; logging out ends the session.
    let (ok, token) = cli(&service, &["user", "token", "ann"], "");
    assert!(ok, "{token}");
    let token = token.trim().to_owned();
    let with_token =
        send(http.get(&format!("{base}/api/status")).set("Authorization", &format!("Bearer {token}")), None);
    assert_eq!(with_token.0, 200);
    let (status, location, cleared, _) = send(http.post(&format!("{base}/logout")).set("Cookie", &session), None);
    assert_eq!((status, location.as_str()), (303, "/login"));
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(get("/alerts", &session).1, "/login");

    // A removed user's token stops working at once (another user remains:
    // with none, loopback is open again).
    let (ok, said) = cli(&service, &["user", "add", "bob"], &format!("{PASSWORD}\n"));
    assert!(ok, "{said}");
    let (ok, said) = cli(&service, &["user", "remove", "ann"], "");
    assert!(ok, "{said}");
    let with_token =
        send(http.get(&format!("{base}/api/status")).set("Authorization", &format!("Bearer {token}")), None);
    assert_eq!(with_token.0, 401);

    // Repeated failures from one source are refused for a while.
    let (ok, said) = cli(&service, &["user", "add", "ann"], &format!("{PASSWORD}\n"));
    assert!(ok, "{said}");
    let statuses: Vec<u16> = (0..6).map(|_| login(WRONG, &base).0).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429], "the login before cleared the first failure");
    assert_eq!(login(PASSWORD, &base).0, 429, "even the right password waits out the limit");
}

fn a_browser_logs_in_reviews_an_alert_and_logs_out() {
    let service = Service::start(&walking_config(&crate::fixtures::real()), &[]);
    service.wait_healthy(WAIT);
    let (ok, said) = cli(&service, &["user", "add", "ann"], &format!("{PASSWORD}\n"));
    assert!(ok, "{said}");
    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let out = Command::new(crate::fixtures::browser_python())
        .arg(repo_file("tests/browser/web_page.py"))
        .arg(format!("http://{}", service.addr))
        .args(["ann", PASSWORD, WRONG])
        .arg(&screenshots)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}\n{}", String::from_utf8_lossy(&out.stderr), service.output());
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["camera"], "walk");

    // What the browser did, as the service recorded it.
    assert!(service.log("app.log").contains("login failed user=ann from=127.0.0.1"));
    let (ok, analysis) = cli(&service, &["alerts", "analyze", "--json"], "");
    assert!(ok, "{analysis}");
    let analysis: serde_json::Value = serde_json::from_str(&analysis).unwrap();
    assert_eq!(analysis["reviews_per_rule"]["person"]["false_positives"], 1, "{analysis}");
    for page in ["login-failed", "live", "alerts", "alert", "system", "config"] {
        let shot = screenshots.join(format!("{page}.png"));
        assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "{}", shot.display());
    }
}
