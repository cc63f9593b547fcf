//! The inference queue: bounded per camera, drops the oldest frame when full
//! (a stale frame is worth less than a fresh one), served round-robin.

use crate::camera::Frame;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The depth last set by any queue (the service runs one).
static QUEUE_DEPTH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub struct FrameQueue {
    capacity: usize,
    inner: Mutex<Inner>,
    ready: Notify,
}

#[derive(Default)]
struct Inner {
    cameras: BTreeMap<Arc<str>, VecDeque<Frame>>,
    /// The camera served last; the next pop starts after it.
    last: Option<Arc<str>>,
    depth: usize,
}

impl FrameQueue {
    /// `capacity` frames per camera.
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new(Inner::default()), ready: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Never blocks: when the camera's queue is full its oldest frame goes.
    pub fn push(&self, frame: Frame) {
        let mut inner = self.lock();
        let camera = frame.camera.clone();
        let queue = inner.cameras.entry(camera.clone()).or_default();
        let dropped = if queue.len() >= self.capacity { queue.pop_front().is_some() } else { false };
        queue.push_back(frame);
        if dropped {
            metrics::counter!("smart_cctv_camera_frames_dropped_total", "camera" => camera.to_string(), "reason" => "inference_queue_full").increment(1);
        } else {
            inner.depth += 1;
        }
        metrics::gauge!("smart_cctv_inference_queue_depth").set(inner.depth as f64);
        QUEUE_DEPTH.store(inner.depth, std::sync::atomic::Ordering::Relaxed);
        drop(inner);
        self.ready.notify_one();
    }

    /// The next frame, round-robin across cameras, if any is waiting.
    pub fn try_pop(&self) -> Option<Frame> {
        let mut inner = self.lock();
        let names: Vec<Arc<str>> = inner.cameras.keys().cloned().collect();
        let start = inner.last.as_ref().and_then(|l| names.iter().position(|n| n > l)).unwrap_or(0);
        for i in 0..names.len() {
            let name = &names[(start + i) % names.len()];
            if let Some(frame) = inner.cameras.get_mut(name).and_then(VecDeque::pop_front) {
                inner.last = Some(name.clone());
                inner.depth -= 1;
                metrics::gauge!("smart_cctv_inference_queue_depth").set(inner.depth as f64);
                QUEUE_DEPTH.store(inner.depth, std::sync::atomic::Ordering::Relaxed);
                return Some(frame);
            }
        }
        None
    }

    /// Waits up to `timeout` for a frame.
    pub async fn pop(&self, timeout: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.ready.notified();
            if let Some(frame) = self.try_pop() {
                return Some(frame);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Frames waiting in the running service's queue, for the health actor.
    pub fn current_depth() -> usize {
        QUEUE_DEPTH.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn depth(&self) -> usize {
        self.lock().depth
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime};

    fn frame(camera: &str, seq: u64) -> Frame {
        Frame {
            camera: Arc::from(camera),
            seq,
            pts: None,
            captured: SystemTime::now(),
            captured_at: Instant::now(),
            rgb: Arc::new(image::RgbImage::new(2, 2)),
            gray: Arc::new(image::GrayImage::new(2, 2)),
        }
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let q = FrameQueue::new(2);
        for seq in 1..=5 {
            q.push(frame("a", seq));
        }
        assert_eq!(q.depth(), 2);
        assert_eq!(q.try_pop().unwrap().seq, 4);
        assert_eq!(q.try_pop().unwrap().seq, 5);
        assert!(q.try_pop().is_none());
    }

    #[test]
    fn busy_camera_cannot_starve_a_quiet_one() {
        let q = FrameQueue::new(100);
        for seq in 1..=50 {
            q.push(frame("busy", seq));
        }
        q.push(frame("quiet", 1));
        let first_two: Vec<String> = (0..2).map(|_| q.try_pop().unwrap().camera.to_string()).collect();
        assert!(first_two.contains(&"quiet".to_owned()), "{first_two:?}");
    }
}
