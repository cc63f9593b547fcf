//! What a speaker plays and when: a priority queue, coalescing of the same
//! rule within a window, and quiet hours (alerts are still stored and
//! logged; they are just not played). Plain code with the time passed in.

use crate::rules::schedule::Schedule;
use chrono::NaiveDateTime;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A request to play.
#[derive(Debug, Clone, PartialEq)]
pub struct PlayRequest {
    pub rule: String,
    /// `chime`, `alarm`, `beep` or a file path.
    pub sound: String,
    /// Higher plays first.
    pub priority: u8,
}

/// What became of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The same rule played (or was queued) within the coalescing window.
    Coalesced,
    Quiet,
    /// The queue is full of more important sounds.
    Full,
}

impl Offer {
    /// The `reason` label of `sounds_dropped_total`.
    pub fn drop_reason(self) -> Option<&'static str> {
        match self {
            Self::Queued => None,
            Self::Coalesced => Some("coalesced"),
            Self::Quiet => Some("quiet_hours"),
            Self::Full => Some("queue_full"),
        }
    }
}

pub struct Policy {
    coalesce: Duration,
    quiet: Option<Schedule>,
    capacity: usize,
    last: HashMap<String, Instant>,
    queue: Vec<(PlayRequest, u64)>,
    seq: u64,
}

impl Policy {
    pub fn new(coalesce: Duration, quiet: Option<Schedule>, capacity: usize) -> Self {
        Self { coalesce, quiet, capacity: capacity.max(1), last: HashMap::new(), queue: Vec::new(), seq: 0 }
    }

    pub fn offer(&mut self, request: PlayRequest, now: Instant, local: NaiveDateTime) -> Offer {
        if self.quiet.as_ref().is_some_and(|q| q.contains(local)) {
            return Offer::Quiet;
        }
        if self.last.get(&request.rule).is_some_and(|t| now.saturating_duration_since(*t) < self.coalesce) {
            return Offer::Coalesced;
        }
        if self.queue.len() >= self.capacity {
            // Make room by dropping the least important, oldest request, if
            // it matters less than this one.
            let (idx, _) =
                self.queue.iter().enumerate().min_by_key(|(_, (r, s))| (r.priority, *s)).unwrap_or((0, &self.queue[0]));
            if self.queue[idx].0.priority >= request.priority {
                return Offer::Full;
            }
            self.queue.remove(idx);
        }
        self.last.insert(request.rule.clone(), now);
        self.seq += 1;
        self.queue.push((request, self.seq));
        Offer::Queued
    }

    /// The next sound: highest priority, then oldest.
    pub fn take_next(&mut self) -> Option<PlayRequest> {
        let (idx, _) = self.queue.iter().enumerate().max_by_key(|(_, (r, s))| (r.priority, std::cmp::Reverse(*s)))?;
        Some(self.queue.remove(idx).0)
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScheduleConfig;
    use chrono::NaiveDate;

    fn req(rule: &str, priority: u8) -> PlayRequest {
        PlayRequest { rule: rule.into(), sound: "chime".into(), priority }
    }

    fn at(h: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2026, 11, 25).unwrap().and_hms_opt(h, 0, 0).unwrap()
    }

    #[test]
    fn coalescing_quiet_hours_and_priority() {
        let quiet = Schedule::from_config(&ScheduleConfig { days: vec![], hours: Some("22:00-07:00".into()) });
        let mut p = Policy::new(Duration::from_secs(10), Some(quiet), 2);
        let t0 = Instant::now();
        assert_eq!(p.offer(req("door", 0), t0, at(12)), Offer::Queued);
        assert_eq!(p.offer(req("door", 0), t0 + Duration::from_secs(5), at(12)), Offer::Coalesced);
        assert_eq!(p.offer(req("gate", 1), t0 + Duration::from_secs(5), at(12)), Offer::Queued);
        assert_eq!(p.offer(req("yard", 0), t0 + Duration::from_secs(6), at(12)), Offer::Full);
        assert_eq!(p.offer(req("fire", 9), t0 + Duration::from_secs(6), at(12)), Offer::Queued);
        assert_eq!(p.take_next().unwrap().rule, "fire");
        assert_eq!(p.take_next().unwrap().rule, "gate");
        assert!(p.take_next().is_none());
        assert_eq!(p.offer(req("door", 0), t0 + Duration::from_secs(11), at(12)), Offer::Queued);
        assert_eq!(p.offer(req("yard", 0), t0 + Duration::from_secs(11), at(23)), Offer::Quiet);
    }
}
