//! The pages, rendered on the server with `maud` (every value escaped).
//! Plain HTML forms do the work, so every page works by keyboard and
//! without script; a few lines of script only refresh the live view.

use crate::resources::Point;
use crate::store::{AlertRecord, EventRecord};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// The stylesheet (`/style.css`): small, no web fonts, readable on a phone.
pub const STYLE: &str = r#"
:root { color-scheme: light dark; --accent: #1f6feb; --bad: #c62828; --ok: #2e7d32; --muted: #777; }
body { font: 16px/1.4 system-ui, sans-serif; margin: 0; }
header { display: flex; flex-wrap: wrap; gap: .5rem 1.2rem; align-items: center; padding: .6rem 1rem; border-bottom: 1px solid #8884; }
header strong { margin-right: auto; }
nav a, header button { padding: .3rem .5rem; }
nav a[aria-current=page] { font-weight: bold; text-decoration: underline; }
main { padding: 1rem; max-width: 1400px; margin: auto; }
a:focus-visible, button:focus-visible, input:focus-visible, select:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(300px, 1fr)); gap: 1rem; }
.card { border: 1px solid #8886; border-radius: 8px; padding: .5rem; margin: 0; }
.card img, .snapshot { width: 100%; height: auto; background: #0002; border-radius: 4px; }
.snapshot { max-width: 800px; }
.strip { display: flex; gap: .5rem; overflow-x: auto; padding-bottom: .5rem; }
.strip a { flex: 0 0 160px; font-size: .85rem; }
.strip img, td img { width: 160px; height: auto; border-radius: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #8883; vertical-align: top; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .muted { color: var(--muted); }
.error { color: var(--bad); font-weight: bold; }
form.inline { display: inline; }
.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin-bottom: 1rem; }
.filters label { display: flex; flex-direction: column; font-size: .9rem; }
pre { overflow-x: auto; background: #8881; padding: .6rem; border-radius: 6px; }
.login { max-width: 22rem; margin: 4rem auto; display: flex; flex-direction: column; gap: .8rem; }
.login input { font-size: 1rem; padding: .4rem; }
button { font-size: 1rem; }
svg text { font-size: 11px; fill: currentColor; }
"#;

/// Every page's `<head>`.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · smart-cctv" }
            link rel="stylesheet" href="/style.css";
        }
    }
}

/// The page frame: header, navigation (the current page marked) and body.
pub fn layout(title: &str, current: &str, user: &str, body: Markup) -> Markup {
    let pages = [("/", "Live"), ("/alerts", "Alerts"), ("/system", "System"), ("/config", "Config")];
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    strong { "smart-cctv" }
                    nav aria-label="Pages" {
                        @for (href, name) in pages {
                            @if href == current { a href=(href) aria-current="page" { (name) } } @else { a href=(href) { (name) } }
                            " "
                        }
                    }
                    span class="muted" { (user) }
                    form class="inline" method="post" action="/logout" { button type="submit" { "Log out" } }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn login(error: Option<&str>, no_users: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in"))
            body {
                main {
                    form class="login" method="post" action="/login" {
                        h1 { "smart-cctv" }
                        @if let Some(error) = error { p class="error" role="alert" id="login-error" { (error) } }
                        @if no_users {
                            p { "No user exists yet. Add the first on the machine that runs the service: "
                                code { "smart-cctv user add NAME" } }
                        }
                        label for="username" { "User name" }
                        input id="username" name="username" autocomplete="username" required autofocus;
                        label for="password" { "Password" }
                        input id="password" name="password" type="password" autocomplete="current-password" required;
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

/// `snapshots/2026-01-15/x.jpg` → `/api/snapshots/2026-01-15/x.jpg`.
pub fn snapshot_url(snapshot: &str) -> String {
    format!("/api/{snapshot}")
}

pub fn local_time(time_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(time_us)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn alert_label(a: &AlertRecord) -> String {
    format!("{} · {} · {} {:.0}%", a.rule, a.camera, a.class, a.confidence * 100.0)
}

fn verdict(a: &AlertRecord) -> Markup {
    html! {
        @match &a.review {
            Some(r) if r.false_positive => span class="bad" { "false positive" },
            Some(_) => span class="ok" { "reviewed" },
            None => span class="muted" { "new" },
        }
    }
}

pub struct CameraCard {
    pub id: String,
    pub phase: String,
    pub age_seconds: Option<f64>,
}

/// The first image's width, before the script knows the card's.
const LIVE_WIDTH: u32 = 480;

pub fn live(cameras: &[CameraCard], recent: &[AlertRecord]) -> Markup {
    html! {
        section aria-labelledby="recent" {
            h2 id="recent" { "Latest alerts" }
            @if recent.is_empty() { p class="muted" { "No alerts yet." } }
            div class="strip" {
                @for a in recent.iter().rev() {
                    a href={ "/alerts/" (a.id) } {
                        img src=(snapshot_url(&a.snapshot)) alt={ "Snapshot: " (alert_label(a)) } loading="lazy";
                        div { (alert_label(a)) } div class="muted" { (local_time(a.time_us)) }
                    }
                }
            }
        }
        section aria-labelledby="cams" {
            h2 id="cams" { "Cameras" }
            label { input type="checkbox" id="boxes" checked; " Draw boxes and zones" }
            div class="grid" {
                @for c in cameras {
                    figure class="card" data-camera=(c.id) {
                        img class="live" src={ "/api/cameras/" (c.id) "/latest.jpg?boxes=1&width=" (LIVE_WIDTH) } alt={ "Latest frame from camera " (c.id) };
                        figcaption {
                            strong { (c.id) } " · "
                            span class="state" { (c.phase) } " · "
                            span class="fps" { "– fps" } " · "
                            span class="age" { @match c.age_seconds { Some(a) => { (format!("{a:.1}")) " s ago" }, None => "no frame yet" } }
                        }
                    }
                }
            }
        }
        script { (PreEscaped(LIVE_SCRIPT)) }
    }
}

/// Refreshes each camera's image every 1.5 s (the next load starts only
/// when the last one finished, so a slow phone is not queued up), and its
/// state, frame rate and last-frame age from `/api/status`.
const LIVE_SCRIPT: &str = r#"
const last = {};
function refresh(img) {
  const boxes = document.getElementById('boxes').checked ? 1 : 0;
  // The card's width in device pixels: what the screen can show, no more.
  const width = Math.round(img.clientWidth * (window.devicePixelRatio || 1)) || 480;
  const cam = img.closest('[data-camera]').dataset.camera;
  const next = new Image();
  next.onload = () => { img.src = next.src; setTimeout(() => refresh(img), 1500); };
  next.onerror = () => setTimeout(() => refresh(img), 3000);
  next.src = '/api/cameras/' + encodeURIComponent(cam) + '/latest.jpg?boxes=' + boxes + '&width=' + width + '&t=' + Date.now();
}
async function status() {
  try {
    const s = await (await fetch('/api/status')).json();
    for (const card of document.querySelectorAll('[data-camera]')) {
      const d = s.details['camera/' + card.dataset.camera];
      if (!d) continue;
      card.querySelector('.state').textContent = d.phase;
      const age = d.last_frame_age_seconds;
      card.querySelector('.age').textContent = age == null ? 'no frame yet' : age.toFixed(1) + ' s ago';
      const now = Date.now() / 1000, prev = last[card.dataset.camera];
      if (prev && now > prev.t) card.querySelector('.fps').textContent = ((d.frames - prev.frames) / (now - prev.t)).toFixed(1) + ' fps';
      last[card.dataset.camera] = { t: now, frames: d.frames };
    }
  } catch (e) {}
  setTimeout(status, 2000);
}
document.querySelectorAll('img.live').forEach(img => setTimeout(() => refresh(img), 1500));
status();
"#;

/// The alert list's filters, as the form sends them back.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct AlertFilters {
    #[serde(default)]
    pub camera: String,
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub class: String,
    /// `YYYY-MM-DD`, local.
    #[serde(default)]
    pub day: String,
    /// Paging: alerts captured before this time (Unix microseconds).
    #[serde(default)]
    pub before: Option<i64>,
}

pub fn alerts(filters: &AlertFilters, cameras: &[String], alerts: &[AlertRecord], older: Option<i64>) -> Markup {
    let keep = |name: &str, value: &str| -> Markup {
        html! { @if !value.is_empty() { input type="hidden" name=(name) value=(value); } }
    };
    html! {
        form class="filters" method="get" action="/alerts" {
            label { "Camera"
                select name="camera" {
                    option value="" { "all" }
                    @for c in cameras { option value=(c) selected[*c == filters.camera] { (c) } }
                }
            }
            label { "Rule" input name="rule" value=(filters.rule); }
            label { "Class" input name="class" value=(filters.class) placeholder="person"; }
            label { "Day" input name="day" type="date" value=(filters.day); }
            button type="submit" { "Filter" }
        }
        @if alerts.is_empty() { p { "No alerts match." } }
        @else {
            table {
                thead { tr { th { "Snapshot" } th { "When" } th { "Alert" } th { "Verdict" } } }
                tbody {
                    @for a in alerts.iter().rev() {
                        tr {
                            td { a href={ "/alerts/" (a.id) } { img src=(snapshot_url(&a.snapshot)) alt={ "Snapshot: " (alert_label(a)) } loading="lazy"; } }
                            td { a href={ "/alerts/" (a.id) } { (local_time(a.time_us)) } }
                            td { (alert_label(a)) }
                            td { (verdict(a)) }
                        }
                    }
                }
            }
        }
        @if let Some(before) = older {
            form method="get" action="/alerts" {
                (keep("camera", &filters.camera)) (keep("rule", &filters.rule)) (keep("class", &filters.class)) (keep("day", &filters.day))
                input type="hidden" name="before" value=(before);
                button type="submit" { "Older alerts" }
            }
        }
    }
}

pub fn alert(a: &AlertRecord, tracks: &[EventRecord]) -> Markup {
    let mark = |value: &str, label: &str| -> Markup {
        html! {
            form class="inline" method="post" action={ "/alerts/" (a.id) "/mark" } {
                input type="hidden" name="mark" value=(value);
                button type="submit" { (label) }
            }
        }
    };
    html! {
        p { (alert_label(a)) " · " (local_time(a.time_us)) " · " (verdict(a))
            @if let Some(d) = a.distance_m { " · " (format!("{d:.1}")) " m" } }
        p {
            (mark("reviewed", "Mark reviewed")) " "
            @if a.review.as_ref().is_some_and(|r| r.false_positive) { (mark("not_false_positive", "Not a false positive")) }
            @else { (mark("false_positive", "Mark false positive")) }
        }
        img class="snapshot" src=(snapshot_url(&a.snapshot)) alt={ "Snapshot with boxes and zones: " (alert_label(a)) };
        h2 { "Tracks" }
        @if tracks.is_empty() { p class="muted" { "Track ids " (format!("{:?}", a.track_ids)) "; their summaries are written when each track ends." } }
        @else {
            table {
                thead { tr { th { "Track" } th { "Class" } th { "First seen" } th { "Last seen" } th { "Best" } } }
                tbody { @for t in tracks { tr {
                    td { "#" (t.track_id) } td { (t.class) } td { (local_time(t.first_seen_us)) } td { (local_time(t.last_seen_us)) }
                    td { (format!("{:.0}%", t.best_confidence * 100.0)) }
                } } }
            }
        }
    }
}

/// CPU and RSS over time as an SVG drawn here: two polylines over a shared
/// time axis, each scaled to its own maximum.
pub fn chart(points: &[Point]) -> Markup {
    let (w, h) = (600.0, 160.0);
    if points.len() < 2 {
        return html! { p class="muted" { "The chart fills in over the first minutes." } };
    }
    let (t0, t1) = (points[0].time as f64, points[points.len() - 1].time as f64);
    let span = (t1 - t0).max(1.0);
    let cpu_max = points.iter().map(|p| p.cpu_percent).fold(100.0, f64::max);
    let rss_max = points.iter().map(|p| p.rss_bytes as f64).fold(1.0, f64::max);
    let line = |value: &dyn Fn(&Point) -> f64, max: f64| -> String {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", (p.time as f64 - t0) / span * w, h - value(p) / max * (h - 10.0)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let rss_mb = rss_max / (1024.0 * 1024.0);
    html! {
        svg viewBox={ "0 0 " (w) " " (h + 20.0) } width="100%" role="img" aria-label={ "CPU (up to " (format!("{cpu_max:.0}")) " %) and RSS (up to " (format!("{rss_mb:.0}")) " MB) over the last " (format!("{:.0}", span / 60.0)) " minutes" } {
            rect x="0" y="0" width=(w) height=(h) fill="none" stroke="#8886";
            polyline fill="none" stroke="#1f6feb" stroke-width="2" points=(line(&|p| p.cpu_percent, cpu_max));
            polyline fill="none" stroke="#e65100" stroke-width="2" points=(line(&|p| p.rss_bytes as f64, rss_max));
            text x="4" y=(h + 15.0) fill="#1f6feb" { "CPU, max " (format!("{cpu_max:.0}")) " %" }
            text x="200" y=(h + 15.0) { "RSS, max " (format!("{rss_mb:.0}")) " MB" }
            text x=(w - 120.0) y=(h + 15.0) { "last " (format!("{:.0}", span / 60.0)) " min" }
        }
    }
}

pub fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
