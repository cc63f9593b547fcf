//! The web page: live view, alerts and their review, system health and the
//! running config, behind a login. Served by the HTTP actor on the same
//! listener as the API; everything is rendered here, with no assets on disk.

pub mod auth;
pub mod latest;
pub mod pages;
pub mod sessions;
pub mod users;

use crate::http::routes::{ApiState, call_store, error, store_read as read};
use crate::store::{Mark, Query};
use auth::Caller;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post, put};
use maud::html;

/// Alerts on one page of the list.
pub const PAGE: usize = 50;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/", get(live))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/style.css", get(style))
        .route("/alerts", get(alert_list))
        .route("/alerts/{id}", get(alert_page))
        .route("/alerts/{id}/mark", post(mark_form))
        .route("/system", get(system))
        .route("/config", get(config))
        .route("/api/cameras/{id}/latest.jpg", get(latest_jpeg))
        .route("/api/alerts/{id}/false_positive", put(false_positive).delete(not_false_positive))
        .route("/api/alerts/{id}/reviewed", put(reviewed))
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], pages::STYLE).into_response()
}

fn page(title: &str, current: &str, caller: &Caller, body: maud::Markup) -> Response {
    Html(pages::layout(title, current, &caller.0, body).into_string()).into_response()
}

async fn live(State(state): State<ApiState>, axum::Extension(caller): axum::Extension<Caller>) -> Response {
    let config = state.config.borrow().clone();
    let details = state.board.details();
    let cameras: Vec<pages::CameraCard> = config
        .cameras
        .iter()
        .map(|c| {
            let detail = details.get(&format!("camera/{}", c.id));
            pages::CameraCard {
                id: c.id.clone(),
                phase: detail.and_then(|d| d["phase"].as_str()).unwrap_or("starting").to_owned(),
                age_seconds: detail.and_then(|d| d["last_frame_age_seconds"].as_f64()),
            }
        })
        .collect();
    let recent = read(&state, |s| s.alerts(&Query { limit: Some(8), ..Query::default() })).await.unwrap_or_default();
    page("Live", "/", &caller, pages::live(&cameras, &recent))
}

/// Local midnight to midnight of `YYYY-MM-DD`, in Unix microseconds.
fn day_range(day: &str) -> Option<(i64, i64)> {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    let start = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0)?.and_local_timezone(chrono::Local).earliest().map(|t| t.timestamp_micros())
    };
    Some((start(date)?, start(date.succ_opt()?)?))
}

fn filled(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

async fn alert_list(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::extract::Query(filters): axum::extract::Query<pages::AlertFilters>,
) -> Response {
    let mut query = Query {
        camera: filled(&filters.camera),
        rule: filled(&filters.rule),
        class: filled(&filters.class),
        until_us: filters.before,
        // One more than a page, to know whether there are older ones.
        limit: Some(PAGE + 1),
        ..Query::default()
    };
    if let Some((from, to)) = filled(&filters.day).and_then(|d| day_range(&d)) {
        query.since_us = Some(from);
        query.until_us = Some(query.until_us.map_or(to, |b| b.min(to)));
    }
    let mut found = match read(&state, move |s| s.alerts(&query)).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let older = (found.len() > PAGE).then(|| {
        found.remove(0);
        found[0].time_us
    });
    let cameras: Vec<String> = state.config.borrow().cameras.iter().map(|c| c.id.clone()).collect();
    page("Alerts", "/alerts", &caller, pages::alerts(&filters, &cameras, &found, older))
}

async fn alert_page(
    State(state): State<ApiState>,
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let found = read(&state, move |s| {
        let Some(alert) = s.alert(&id)? else { return Ok(None) };
        // The tracks it names, from the minutes around it.
        let around = Query {
            since_us: Some(alert.time_us - 600_000_000),
            until_us: Some(alert.time_us + 600_000_000),
            camera: Some(alert.camera.clone()),
            ..Query::default()
        };
        let tracks =
            s.events(&around)?.into_iter().filter(|e| alert.track_ids.contains(&e.track_id)).collect::<Vec<_>>();
        Ok(Some((alert, tracks)))
    })
    .await;
    match found {
        Ok(Some((alert, tracks))) => page("Alert", "/alerts", &caller, pages::alert(&alert, &tracks)),
        Ok(None) => error(StatusCode::NOT_FOUND, "no such alert"),
        Err(response) => response,
    }
}

/// Asks the store actor to record a verdict.
async fn review(id: String, mark: Mark, by: String) -> Result<crate::store::AlertReview, Response> {
    let request = |reply| crate::store::actor::StoreMsg::Review(id, mark, by, reply);
    call_store(10_000, request).await?.ok_or_else(|| error(StatusCode::NOT_FOUND, "no such alert"))
}

#[derive(serde::Deserialize)]
struct MarkForm {
    mark: String,
}

async fn mark_form(
    axum::Extension(caller): axum::Extension<Caller>,
    Path(id): Path<String>,
    axum::Form(form): axum::Form<MarkForm>,
) -> Response {
    let mark = match form.mark.as_str() {
        "reviewed" => Mark::Reviewed,
        "false_positive" => Mark::FalsePositive,
        "not_false_positive" => Mark::NotFalsePositive,
        _ => return error(StatusCode::BAD_REQUEST, "mark: one of reviewed, false_positive, not_false_positive"),
    };
    match review(id.clone(), mark, caller.0).await {
        Ok(_) => Redirect::to(&format!("/alerts/{id}")).into_response(),
        Err(response) => response,
    }
}

async fn mark_api(id: String, mark: Mark, caller: Caller) -> Response {
    match review(id, mark, caller.0).await {
        Ok(review) => axum::Json(review).into_response(),
        Err(response) => response,
    }
}

async fn false_positive(axum::Extension(caller): axum::Extension<Caller>, Path(id): Path<String>) -> Response {
    mark_api(id, Mark::FalsePositive, caller).await
}

async fn not_false_positive(axum::Extension(caller): axum::Extension<Caller>, Path(id): Path<String>) -> Response {
    mark_api(id, Mark::NotFalsePositive, caller).await
}

async fn reviewed(axum::Extension(caller): axum::Extension<Caller>, Path(id): Path<String>) -> Response {
    mark_api(id, Mark::Reviewed, caller).await
}

#[derive(serde::Deserialize)]
struct LatestParams {
    #[serde(default)]
    boxes: Option<u8>,
    /// Scale down to this many pixels wide.
    #[serde(default)]
    width: Option<u32>,
}

async fn latest_jpeg(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    axum::extract::Query(params): axum::extract::Query<LatestParams>,
) -> Response {
    let Some(frame) = state.latest.get(&id) else {
        return error(StatusCode::NOT_FOUND, format!("camera {id}: no analysed frame yet"));
    };
    let boxes = params.boxes.unwrap_or(0) != 0;
    let zones: Vec<Vec<(f32, f32)>> = if boxes {
        crate::mqtt::objects::zones_for(&state.config.borrow(), &id).into_iter().map(|z| z.polygon).collect()
    } else {
        Vec::new()
    };
    match tokio::task::spawn_blocking(move || latest::jpeg(&frame, boxes, &zones, params.width)).await {
        Ok(Ok(bytes)) => {
            ([(header::CONTENT_TYPE, "image/jpeg"), (header::CACHE_CONTROL, "no-store")], bytes).into_response()
        }
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the frame"),
    }
}

/// `root/cameras/front` paths as a nested list.
fn tree(paths: &[(String, crate::health::board::ChildHealth)]) -> maud::Markup {
    html! {
        ul {
            @for (path, child) in paths {
                @let depth = path.matches('/').count();
                li style={ "margin-left:" (depth) "rem" } {
                    code { (path.rsplit('/').next().unwrap_or(path)) } " "
                    span class=(if matches!(child.state, crate::health::board::ChildState::Up) { "ok" } else { "bad" }) {
                        (format!("{:?}", child.state).to_lowercase())
                    }
                    @if child.restarts > 0 { " · " (child.restarts) " restarts" }
                }
            }
        }
    }
}

/// One line a person reads, from a health board detail.
fn summary(key: &str, d: &serde_json::Value) -> String {
    let mb = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0);
    let n = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
    match key {
        "process" => format!(
            "CPU {:.0} %, RSS {:.0} MB, {} threads, {} open files",
            n(&d["cpu_percent"]),
            mb(&d["rss_bytes"]),
            d["threads"],
            d["open_files"]
        ),
        "disk" => format!("{:.0} % used, {:.1} GB free", n(&d["used_percent"]), mb(&d["available_bytes"]) / 1024.0),
        "store" => format!("{} commits, the last took {:.0} ms", d["commits"], n(&d["last_commit_ms"])),
        "inference" => format!("{} frames waiting", d["queue_depth"]),
        _ => d.to_string(),
    }
}

async fn system(State(state): State<ApiState>, axum::Extension(caller): axum::Extension<Caller>) -> Response {
    let report = state.board.report();
    let children: Vec<_> = state.board.snapshot().into_iter().collect();
    let details = state.board.details();
    let components = state.board.components();
    let points = state.history.points();
    let body = html! {
        p { "Health: " @if report.healthy { strong class="ok" { "healthy" } } @else { strong class="bad" { "unhealthy" } } }
        @if !report.down.is_empty() {
            ul { @for (path, down) in &report.down { li class="bad" { code { (path) } ": " (serde_json::to_string(down).unwrap_or_default()) } } }
        }
        h2 { "CPU and memory, last hour" }
        (pages::chart(&points))
        h2 { "Process, disk and store" }
        table {
            tbody {
                @for key in ["process", "disk", "store", "inference"] {
                    @if let Some(d) = details.get(key) { tr { th scope="row" { (key) } td { (summary(key, d)) } } }
                }
            }
        }
        @if let Some(cluster) = &state.cluster {
            h2 { "Cluster" }
            p { "This node: " strong { (cluster.config.node_name) } " (" (cluster.role().as_str()) "), listening on " code { (cluster.config.listen) } }
            table {
                thead { tr { th { "Node" } th { "Role" } th { "State" } th { "Round trip" } th { "Workers" } th { "Sent" } th { "Received" } th { "Failed" } th { "Served" } } }
                tbody {
                    @for peer in cluster.peers.snapshot() {
                        tr {
                            td { (peer.name) }
                            td { (peer.role.clone().unwrap_or_else(|| "?".into())) }
                            @if peer.up { td class="ok" { "up" } } @else { td class="bad" { "down: " (peer.reason.clone().unwrap_or_default()) } }
                            td { (peer.rtt_ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms"))) }
                            td { (peer.workers) }
                            td { (peer.frames_sent) }
                            td { (peer.frames_received) }
                            td { (peer.frames_failed) }
                            td { (peer.frames_served) }
                        }
                    }
                }
            }
        }
        h2 { "Supervised children" }
        table {
            thead { tr { th { "Child" } th { "State" } th { "Policy" } th { "Restarts" } th { "Last error" } } }
            tbody {
                @for (path, child) in &children {
                    tr {
                        td { code { (path) } }
                        td { (format!("{:?}", child.state).to_lowercase()) }
                        td { (format!("{:?}", child.restart).to_lowercase()) }
                        td { (child.restarts) }
                        td { (child.last_error.clone().unwrap_or_default()) }
                    }
                }
            }
        }
        h2 { "Components" }
        table {
            tbody { @for (path, c) in &components { tr { td { code { (path) } } td { (serde_json::to_string(c).unwrap_or_default()) } } } }
        }
        h2 { "Supervision tree" }
        (tree(&children))
    };
    page("System", "/system", &caller, body)
}

async fn config(State(state): State<ApiState>, axum::Extension(caller): axum::Extension<Caller>) -> Response {
    // Serialising redacts every secret (see `config::redact`).
    let running = serde_json::to_value(state.config.borrow().as_ref()).unwrap_or_default();
    let reload = state.board.details().remove("reload");
    let body = html! {
        h2 { "Last reload" }
        @match &reload {
            Some(r) => pre { (pages::pretty(r)) },
            None => p class="muted" { "No reload since the service started (send SIGHUP, or systemctl reload)." },
        }
        h2 { "Running configuration (read-only, secrets redacted)" }
        pre { (pages::pretty(&running)) }
    };
    page("Config", "/config", &caller, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_local_midnight_to_midnight_and_nonsense_is_no_filter() {
        let (from, to) = day_range("2026-03-02").unwrap();
        assert!(to - from >= 23 * 3_600_000_000 && to - from <= 25 * 3_600_000_000, "{from} {to}");
        assert_eq!(pages::local_time(from), "2026-03-02 00:00:00");
        assert_eq!(day_range("2026-13-40"), None);
        assert_eq!(day_range("'; drop"), None);
        assert_eq!(filled("  "), None);
        assert_eq!(filled(" front "), Some("front".to_owned()));
    }

    #[test]
    fn what_the_store_holds_is_escaped_on_the_page() {
        let alert = crate::store::AlertRecord {
            id: "01a2302c-a096-70d9-adf1-df50fbde360e".into(),
            time_us: 1_000_000,
            rule: "<script>alert(1)</script>".into(),
            camera: "front\"onload=\"x".into(),
            class: "person".into(),
            confidence: 0.5,
            track_ids: vec![1],
            distance_m: None,
            snapshot: "snapshots/a.jpg".into(),
            review: None,
        };
        let page = pages::alerts(&pages::AlertFilters::default(), &[], &[alert], Some(7)).into_string();
        assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"), "{page}");
        assert!(!page.contains("front\"onload"), "{page}");
        assert!(page.contains("name=\"before\" value=\"7\""), "paging to older alerts: {page}");
    }

    #[test]
    fn board_details_read_as_sentences() {
        let process =
            serde_json::json!({"cpu_percent": 44.3, "rss_bytes": 168_230_912u64, "threads": 13, "open_files": 24});
        assert_eq!(summary("process", &process), "CPU 44 %, RSS 160 MB, 13 threads, 24 open files");
        let store = serde_json::json!({"commits": 5, "last_commit_ms": 28.1, "batch": 1});
        assert_eq!(summary("store", &store), "5 commits, the last took 28 ms");
    }

    #[test]
    fn the_chart_scales_both_lines_into_its_box() {
        use crate::resources::Point;
        assert!(!pages::chart(&[]).into_string().contains("<svg"));
        let points: Vec<Point> = (0..4)
            .map(|i| Point { time: 1000 + i * 10, cpu_percent: 50.0 * i as f64, rss_bytes: (100 + i) << 20 })
            .collect();
        let svg = pages::chart(&points).into_string();
        assert!(svg.contains("<svg") && svg.contains("role=\"img\""), "{svg}");
        assert!(svg.contains("CPU, max 150 %") && svg.contains("RSS, max 103 MB"), "{svg}");
        // Time runs left to right over the full width; the highest CPU touches the top margin.
        assert!(svg.contains("points=\"0.0,160.0 200.0,110.0 400.0,60.0 600.0,10.0\""), "{svg}");
    }
}
