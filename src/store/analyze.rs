//! `alerts analyze`, which replaces `analyze_alerts.py`: counts per rule,
//! camera, hour of day and day, the busiest hours, and the false-positive
//! rate per rule and camera from the reviews made on the web page.

use super::AlertRecord;
use chrono::{DateTime, Local, Timelike};
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Analysis {
    pub total: usize,
    pub per_rule: BTreeMap<String, usize>,
    pub per_camera: BTreeMap<String, usize>,
    /// Local hour of day (0–23).
    pub per_hour: BTreeMap<u32, usize>,
    /// Local date, `YYYY-MM-DD`.
    pub per_day: BTreeMap<String, usize>,
    /// The busiest local hours (`YYYY-MM-DD HH:00`), most alerts first.
    pub busiest: Vec<(String, usize)>,
    /// Reviews, per rule and per camera.
    pub reviews_per_rule: BTreeMap<String, Reviews>,
    pub reviews_per_camera: BTreeMap<String, Reviews>,
}

/// How the alerts of one rule or camera were judged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Reviews {
    pub alerts: usize,
    pub reviewed: usize,
    pub false_positives: usize,
}

impl Reviews {
    /// False positives among the reviewed alerts; `None` before any review.
    pub fn false_positive_rate(&self) -> Option<f64> {
        (self.reviewed > 0).then(|| self.false_positives as f64 / self.reviewed as f64)
    }

    fn count(&mut self, alert: &AlertRecord) {
        self.alerts += 1;
        if let Some(review) = alert.review.as_ref().filter(|r| r.reviewed) {
            self.reviewed += 1;
            self.false_positives += usize::from(review.false_positive);
        }
    }
}

pub fn analyze(alerts: &[AlertRecord], top: usize) -> Analysis {
    let mut a = Analysis { total: alerts.len(), ..Analysis::default() };
    let mut per_slot: BTreeMap<String, usize> = BTreeMap::new();
    for alert in alerts {
        *a.per_rule.entry(alert.rule.clone()).or_default() += 1;
        *a.per_camera.entry(alert.camera.clone()).or_default() += 1;
        a.reviews_per_rule.entry(alert.rule.clone()).or_default().count(alert);
        a.reviews_per_camera.entry(alert.camera.clone()).or_default().count(alert);
        let Some(t) = DateTime::from_timestamp_micros(alert.time_us).map(|t| t.with_timezone(&Local)) else { continue };
        *a.per_hour.entry(t.hour()).or_default() += 1;
        *a.per_day.entry(t.format("%Y-%m-%d").to_string()).or_default() += 1;
        *per_slot.entry(t.format("%Y-%m-%d %H:00").to_string()).or_default() += 1;
    }
    let mut busiest: Vec<(String, usize)> = per_slot.into_iter().collect();
    busiest.sort_by(|x, y| y.1.cmp(&x.1).then_with(|| x.0.cmp(&y.0)));
    busiest.truncate(top);
    a.busiest = busiest;
    a
}

impl std::fmt::Display for Analysis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} alert(s)", self.total)?;
        let section = |f: &mut std::fmt::Formatter<'_>, title: &str, rows: Vec<(String, usize)>| -> std::fmt::Result {
            writeln!(f, "\n{title}")?;
            for (k, v) in rows {
                writeln!(f, "  {k:<24} {v:>6}")?;
            }
            Ok(())
        };
        section(f, "per rule", self.per_rule.iter().map(|(k, v)| (k.clone(), *v)).collect())?;
        section(f, "per camera", self.per_camera.iter().map(|(k, v)| (k.clone(), *v)).collect())?;
        section(f, "per hour of day", self.per_hour.iter().map(|(k, v)| (format!("{k:02}:00"), *v)).collect())?;
        section(f, "per day", self.per_day.iter().map(|(k, v)| (k.clone(), *v)).collect())?;
        section(f, "busiest hours", self.busiest.clone())?;
        let rates = |f: &mut std::fmt::Formatter<'_>, title: &str, rows: &BTreeMap<String, Reviews>| {
            writeln!(f, "\n{title}")?;
            for (k, r) in rows {
                let rate = r.false_positive_rate().map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0));
                writeln!(
                    f,
                    "  {k:<24} {rate:>6}  ({} false of {} reviewed, {} alerts)",
                    r.false_positives, r.reviewed, r.alerts
                )?;
            }
            Ok(())
        };
        rates(f, "false positives per rule", &self.reviews_per_rule)?;
        rates(f, "false positives per camera", &self.reviews_per_camera)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_busiest_periods() {
        let base = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
            .unwrap()
            .and_hms_opt(10, 15, 0)
            .unwrap()
            .and_local_timezone(Local)
            .unwrap()
            .timestamp_micros();
        let hour = 3_600_000_000i64;
        let alert = |t: i64, rule: &str, camera: &str| AlertRecord {
            id: String::new(),
            time_us: t,
            rule: rule.into(),
            camera: camera.into(),
            class: "person".into(),
            confidence: 0.8,
            track_ids: vec![],
            distance_m: None,
            snapshot: String::new(),
            review: None,
        };
        let alerts =
            [alert(base, "door", "front"), alert(base + 60, "door", "front"), alert(base + hour, "gate", "back")];
        let a = analyze(&alerts, 1);
        assert_eq!(a.total, 3);
        assert_eq!(a.per_rule["door"], 2);
        assert_eq!(a.per_camera["back"], 1);
        assert_eq!((a.per_hour[&10], a.per_hour[&11]), (2, 1));
        assert_eq!(a.per_day["2026-03-02"], 3);
        assert_eq!(a.busiest, vec![("2026-03-02 10:00".to_owned(), 2)]);
        assert_eq!(a.reviews_per_rule["door"].false_positive_rate(), None);

        let judged =
            |false_positive| Some(crate::store::AlertReview { reviewed: true, false_positive, ..Default::default() });
        let mut alerts = alerts.to_vec();
        alerts[0].review = judged(true);
        alerts[1].review = judged(false);
        let a = analyze(&alerts, 1);
        assert_eq!(a.reviews_per_rule["door"], Reviews { alerts: 2, reviewed: 2, false_positives: 1 });
        assert_eq!(a.reviews_per_rule["door"].false_positive_rate(), Some(0.5));
        assert_eq!(a.reviews_per_camera["back"], Reviews { alerts: 1, reviewed: 0, false_positives: 0 });
        assert!(a.to_string().contains("door                        50%  (1 false of 2 reviewed, 2 alerts)"), "{a}");
    }
}
