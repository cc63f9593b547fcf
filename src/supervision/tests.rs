//! Supervisor semantics, on tokio's paused clock: backoff delays are exact and
//! nothing sleeps for real.

use super::*;
use crate::base::clock::tokio_clock;
use crate::health::{ChildState, HealthBoard};
use proptest::prelude::{prop_assert, prop_assert_eq, proptest};
use ractor::{Actor, ActorProcessingErr, ActorRef, call_t};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Started(&'static str),
    Stopped(&'static str),
}

/// A child that reports its life and dies on request.
struct Probe;

enum ProbeMsg {
    Panic,
    Fail,
    Finish,
}

impl ractor::Message for ProbeMsg {}

struct ProbeArgs {
    id: &'static str,
    events: mpsc::UnboundedSender<Event>,
}

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ProbeArgs;
    type Arguments = ProbeArgs;

    async fn pre_start(&self, _: ActorRef<ProbeMsg>, args: ProbeArgs) -> Result<ProbeArgs, ActorProcessingErr> {
        let _ = args.events.send(Event::Started(args.id));
        Ok(args)
    }

    async fn post_stop(&self, _: ActorRef<ProbeMsg>, state: &mut ProbeArgs) -> Result<(), ActorProcessingErr> {
        let _ = state.events.send(Event::Stopped(state.id));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ProbeMsg>,
        msg: ProbeMsg,
        _: &mut ProbeArgs,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProbeMsg::Panic => panic!("probe asked to panic"),
            ProbeMsg::Fail => Err("probe asked to fail".into()),
            ProbeMsg::Finish => {
                myself.stop(Some("done".into()));
                Ok(())
            }
        }
    }
}

fn probe(id: &'static str, restart: Restart, events: &mpsc::UnboundedSender<Event>, initial: Duration) -> ChildSpec {
    let events = events.clone();
    let mut spec = ChildSpec::new(id, restart, move |sup| spawn_probe(id, events.clone(), sup));
    spec.backoff = Backoff { initial, max: initial * 8, multiplier: 2.0, jitter: 0.0 };
    spec
}

/// Starts a probe under `sup`, registered under a unique name.
async fn spawn_probe(
    id: &'static str,
    events: mpsc::UnboundedSender<Event>,
    sup: ractor::ActorCell,
) -> Result<ractor::ActorCell, ractor::SpawnErr> {
    let name = format!("probe-{id}-{}", fastrand::u64(..));
    let (actor, _) = Actor::spawn_linked(Some(name), Probe, ProbeArgs { id, events }, sup).await?;
    Ok(actor.get_cell())
}

struct Tree {
    sup: ActorRef<SupervisorMsg>,
    board: HealthBoard,
    events: mpsc::UnboundedReceiver<Event>,
    escalations: mpsc::UnboundedReceiver<String>,
}

async fn start_tree(
    strategy: Strategy,
    max_restarts: u32,
    children: impl FnOnce(&mpsc::UnboundedSender<Event>) -> Vec<ChildSpec>,
) -> Tree {
    let (tx, events) = mpsc::unbounded_channel();
    let (esc_tx, escalations) = mpsc::unbounded_channel();
    let board = HealthBoard::new();
    let args = SupervisorArgs {
        path: "root".into(),
        strategy,
        intensity: Intensity { max_restarts, period: Duration::from_secs(10) },
        children: children(&tx),
        board: board.clone(),
        clock: tokio_clock(),
        on_escalate: Some(esc_tx),
    };
    let (sup, _) = Actor::spawn(None, Supervisor, args).await.unwrap();
    Tree { sup, board, events, escalations }
}

impl Tree {
    async fn next(&mut self) -> Event {
        tokio::time::timeout(Duration::from_secs(60), self.events.recv()).await.unwrap().unwrap()
    }

    async fn expect(&mut self, expected: &[Event]) {
        for e in expected {
            assert_eq!(&self.next().await, e);
        }
    }

    fn child(&self, id: &str) -> ActorRef<ProbeMsg> {
        // Probes are registered under unique names; find the live one via the supervisor's children.
        let cells = self.sup.get_children();
        let cell = cells
            .into_iter()
            .find(|c| c.get_name().is_some_and(|n| n.starts_with(&format!("probe-{id}-"))))
            .unwrap_or_else(|| panic!("child {id} is not running"));
        cell.into()
    }

    async fn starts(&self, id: &str) -> u64 {
        let children = call_t!(self.sup, SupervisorMsg::Children, 1000).unwrap();
        children.into_iter().find(|c| c.id == id).map_or(0, |c| c.starts)
    }
}

#[tokio::test(start_paused = true)]
async fn panicking_child_is_restarted_after_its_backoff() {
    let backoff = Duration::from_millis(800);
    let mut tree = start_tree(Strategy::OneForOne, 3, |tx| vec![probe("a", Restart::Permanent, tx, backoff)]).await;
    tree.expect(&[Event::Started("a")]).await;
    assert_eq!(tree.board.get("root/a").unwrap().state, ChildState::Up);

    let failed_at = Instant::now();
    tree.child("a").cast(ProbeMsg::Panic).unwrap();
    tree.expect(&[Event::Started("a")]).await;
    let waited = failed_at.elapsed();
    assert!(waited >= backoff && waited < backoff + Duration::from_millis(50), "restarted after {waited:?}");
    assert_eq!(tree.starts("a").await, 2);
    let health = tree.board.get("root/a").unwrap();
    assert_eq!((health.state, health.restarts), (ChildState::Up, 1));
    assert!(health.last_error.unwrap().contains("panic"));

    // The second consecutive failure waits twice as long.
    let failed_at = Instant::now();
    tree.child("a").cast(ProbeMsg::Fail).unwrap();
    tree.expect(&[Event::Started("a")]).await;
    assert!(failed_at.elapsed() >= backoff * 2);
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_later_siblings_only() {
    let ms = Duration::from_millis(100);
    let mut tree = start_tree(Strategy::RestForOne, 3, |tx| {
        vec![
            probe("a", Restart::Permanent, tx, ms),
            probe("b", Restart::Permanent, tx, ms),
            probe("c", Restart::Permanent, tx, ms),
        ]
    })
    .await;
    tree.expect(&[Event::Started("a"), Event::Started("b"), Event::Started("c")]).await;

    tree.child("b").cast(ProbeMsg::Panic).unwrap();
    // c is stopped (b died by panic, so no Stopped for b), then b and c start in order.
    tree.expect(&[Event::Stopped("c"), Event::Started("b"), Event::Started("c")]).await;
    assert_eq!(tree.starts("a").await, 1);
    assert_eq!(tree.starts("b").await, 2);
    assert_eq!(tree.starts("c").await, 2);
    assert!(tree.events.try_recv().is_err(), "a must not have been touched");
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_child() {
    let ms = Duration::from_millis(100);
    let mut tree = start_tree(Strategy::OneForAll, 3, |tx| {
        vec![
            probe("a", Restart::Permanent, tx, ms),
            probe("b", Restart::Permanent, tx, ms),
            probe("c", Restart::Permanent, tx, ms),
        ]
    })
    .await;
    tree.expect(&[Event::Started("a"), Event::Started("b"), Event::Started("c")]).await;
    tree.child("b").cast(ProbeMsg::Fail).unwrap();
    tree.expect(&[
        Event::Stopped("c"),
        Event::Stopped("a"),
        Event::Started("a"),
        Event::Started("b"),
        Event::Started("c"),
    ])
    .await;
}

#[tokio::test(start_paused = true)]
async fn transient_child_that_finishes_normally_is_not_restarted() {
    let ms = Duration::from_millis(100);
    let mut tree = start_tree(Strategy::OneForOne, 3, |tx| vec![probe("t", Restart::Transient, tx, ms)]).await;
    tree.expect(&[Event::Started("t")]).await;

    // A failure restarts it...
    tree.child("t").cast(ProbeMsg::Panic).unwrap();
    tree.expect(&[Event::Started("t")]).await;
    // ...a normal exit does not.
    tree.child("t").cast(ProbeMsg::Finish).unwrap();
    tree.expect(&[Event::Stopped("t")]).await;
    tokio::time::sleep(ms * 100).await;
    assert!(tree.events.try_recv().is_err());
    assert_eq!(tree.starts("t").await, 2);
    assert_eq!(tree.board.get("root/t").unwrap().state, ChildState::Stopped);
    assert!(tree.board.report().healthy, "a finished transient child is not a health problem");
}

#[tokio::test(start_paused = true)]
async fn permanent_child_that_finishes_normally_is_restarted() {
    let ms = Duration::from_millis(100);
    let mut tree = start_tree(Strategy::OneForOne, 3, |tx| vec![probe("p", Restart::Permanent, tx, ms)]).await;
    tree.expect(&[Event::Started("p")]).await;
    tree.child("p").cast(ProbeMsg::Finish).unwrap();
    tree.expect(&[Event::Stopped("p"), Event::Started("p")]).await;
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_intensity_escalates_to_the_parent() {
    let ms = Duration::from_millis(100);
    let (tx, mut events) = mpsc::unbounded_channel();
    let (esc_tx, mut escalations) = mpsc::unbounded_channel();
    let board = HealthBoard::new();

    // root (one_for_one, generous) -> inner (max 2 restarts in 10 s) -> x, y
    let inner_board = board.clone();
    let inner_tx = tx.clone();
    let mut inner = ChildSpec::new("inner", Restart::Permanent, move |sup| {
        let args = SupervisorArgs {
            path: "root/inner".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 2, period: Duration::from_secs(10) },
            children: vec![
                probe("x", Restart::Permanent, &inner_tx, ms),
                probe("y", Restart::Permanent, &inner_tx, ms),
            ],
            board: inner_board.clone(),
            clock: tokio_clock(),
            on_escalate: None,
        };
        async move { Ok(Actor::spawn_linked(None, Supervisor, args, sup).await?.0.get_cell()) }
    });
    inner.backoff =
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(1), multiplier: 1.0, jitter: 0.0 };
    let (root, _) = Actor::spawn(
        None,
        Supervisor,
        SupervisorArgs {
            path: "root".into(),
            strategy: Strategy::OneForOne,
            intensity: Intensity { max_restarts: 5, period: Duration::from_secs(60) },
            children: vec![inner],
            board: board.clone(),
            clock: tokio_clock(),
            on_escalate: Some(esc_tx),
        },
    )
    .await
    .unwrap();
    assert_eq!(next(&mut events).await, Event::Started("x"));
    assert_eq!(next(&mut events).await, Event::Started("y"));

    let find_x = || {
        let inner = root.get_children().into_iter().next().unwrap();
        let x =
            inner.get_children().into_iter().find(|c| c.get_name().is_some_and(|n| n.starts_with("probe-x-"))).unwrap();
        ActorRef::<ProbeMsg>::from(x)
    };
    // Two restarts are within the intensity.
    for _ in 0..2 {
        find_x().cast(ProbeMsg::Panic).unwrap();
        assert_eq!(next(&mut events).await, Event::Started("x"));
    }
    assert_eq!(board.get("root/inner").unwrap().restarts, 0);

    // The third within 10 s is one too many: inner stops y and fails; root restarts inner after 1 s.
    let failed_at = Instant::now();
    find_x().cast(ProbeMsg::Panic).unwrap();
    assert_eq!(next(&mut events).await, Event::Stopped("y"));
    assert_eq!(next(&mut events).await, Event::Started("x"));
    assert_eq!(next(&mut events).await, Event::Started("y"));
    assert!(failed_at.elapsed() >= Duration::from_secs(1));
    let health = board.get("root/inner").unwrap();
    assert_eq!(health.restarts, 1);
    assert!(health.last_error.unwrap().contains("restart intensity"));
    assert!(escalations.try_recv().is_err(), "the root itself is within its intensity");
}

#[tokio::test(start_paused = true)]
async fn root_that_exceeds_its_intensity_reports_and_stops() {
    let ms = Duration::from_millis(10);
    let mut tree = start_tree(Strategy::OneForOne, 1, |tx| {
        vec![probe("a", Restart::Permanent, tx, ms), probe("b", Restart::Permanent, tx, ms)]
    })
    .await;
    tree.expect(&[Event::Started("a"), Event::Started("b")]).await;
    tree.child("a").cast(ProbeMsg::Panic).unwrap();
    tree.expect(&[Event::Started("a")]).await;
    tree.child("a").cast(ProbeMsg::Panic).unwrap();
    tree.expect(&[Event::Stopped("b")]).await;
    let reason = tokio::time::timeout(Duration::from_secs(5), tree.escalations.recv()).await.unwrap().unwrap();
    assert!(reason.contains("root exceeded its restart intensity"), "{reason}");
    assert_eq!(tree.board.get("root/b").unwrap().state, ChildState::Failed);
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_goes_in_reverse_start_order() {
    let ms = Duration::from_millis(10);
    let mut tree = start_tree(Strategy::OneForOne, 3, |tx| {
        vec![
            probe("a", Restart::Permanent, tx, ms),
            probe("b", Restart::Permanent, tx, ms),
            probe("c", Restart::Permanent, tx, ms),
        ]
    })
    .await;
    tree.expect(&[Event::Started("a"), Event::Started("b"), Event::Started("c")]).await;
    tree.sup.stop_and_wait(None, Some(Duration::from_secs(30))).await.unwrap();
    tree.expect(&[Event::Stopped("c"), Event::Stopped("b"), Event::Stopped("a")]).await;
}

#[tokio::test(start_paused = true)]
async fn dynamic_children_are_added_and_removed_without_touching_others() {
    let ms = Duration::from_millis(10);
    let mut tree = start_tree(Strategy::OneForOne, 3, |tx| vec![probe("a", Restart::Permanent, tx, ms)]).await;
    tree.expect(&[Event::Started("a")]).await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let spec = probe("cam", Restart::Transient, &tx, ms);
    call_t!(tree.sup, SupervisorMsg::StartChild, 1000, spec.clone()).unwrap().unwrap();
    assert_eq!(events.recv().await.unwrap(), Event::Started("cam"));
    let duplicate = call_t!(tree.sup, SupervisorMsg::StartChild, 1000, spec).unwrap();
    assert!(duplicate.unwrap_err().contains("already exists"));

    assert!(call_t!(tree.sup, SupervisorMsg::StopChild, 1000, "cam".to_string()).unwrap());
    assert_eq!(events.recv().await.unwrap(), Event::Stopped("cam"));
    assert!(tree.board.get("root/cam").is_none());
    assert!(!call_t!(tree.sup, SupervisorMsg::StopChild, 1000, "cam".to_string()).unwrap());
    assert_eq!(tree.starts("a").await, 1);
    assert!(tree.events.try_recv().is_err());
}

proptest! {
    /// The window agrees with a brute-force count over the whole history.
    #[test]
    fn restart_window_matches_brute_force(
        max_restarts in 0u32..6,
        period_ms in 1u64..5_000,
        gaps in proptest::collection::vec(0u64..3_000, 1..40),
    ) {
        let period = Duration::from_millis(period_ms);
        let mut window = RestartWindow::new(Intensity { max_restarts, period });
        let start = Instant::now();
        let mut history = Vec::new();
        let mut t = start;
        for gap in gaps {
            t += Duration::from_millis(gap);
            history.push(t);
            let in_window = history.iter().filter(|&&h| t.duration_since(h) < period).count();
            prop_assert_eq!(window.record(t), in_window <= max_restarts as usize);
            prop_assert_eq!(window.len(), in_window);
        }
    }

    /// Backoff grows, is capped, and jitter stays within its fraction.
    #[test]
    fn backoff_stays_within_bounds(
        initial_ms in 1u64..2_000,
        cap_factor in 1u64..100,
        multiplier in 1.0f64..4.0,
        jitter in 0.0f64..1.0,
        attempt in 1u32..100,
        unit in 0.0f64..1.0,
    ) {
        let b = Backoff {
            initial: Duration::from_millis(initial_ms),
            max: Duration::from_millis(initial_ms * cap_factor),
            multiplier,
            jitter,
        };
        let d = b.delay(attempt, unit).as_secs_f64();
        let nominal = (b.initial.as_secs_f64() * multiplier.powi(attempt as i32 - 1)).min(b.max.as_secs_f64());
        prop_assert!(d <= b.max.as_secs_f64() + 1e-9);
        prop_assert!(d >= nominal * (1.0 - jitter) - 1e-9);
        prop_assert!(d <= nominal * (1.0 + jitter) + 1e-9);
        let no_jitter = Backoff { jitter: 0.0, ..b };
        prop_assert!(no_jitter.delay(attempt + 1, unit) >= no_jitter.delay(attempt, unit));
    }
}

async fn next(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(Duration::from_secs(60), events.recv()).await.unwrap().unwrap()
}

/// A child whose first `failures` starts fail (a disk that is full at boot).
fn flaky(id: &'static str, failures: u32, policy: StartFailure, events: &mpsc::UnboundedSender<Event>) -> ChildSpec {
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let events = events.clone();
    let mut spec = ChildSpec::new(id, Restart::Permanent, move |sup| {
        let (events, tries) = (events.clone(), tries.clone());
        async move {
            if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < failures {
                return Err(ractor::SpawnErr::StartupFailed("no space left on device".into()));
            }
            spawn_probe(id, events, sup).await
        }
    });
    spec.backoff =
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(8), multiplier: 2.0, jitter: 0.0 };
    spec.on_start_failure = policy;
    spec
}

#[tokio::test(start_paused = true)]
async fn a_child_that_may_retry_its_start_lets_the_others_run_until_it_starts() {
    // `store` cannot start three times; `cameras`, after it, runs meanwhile.
    let mut tree = start_tree(Strategy::OneForOne, 1, |tx| {
        vec![
            flaky("store", 3, StartFailure::Retry, tx),
            probe("cameras", Restart::Permanent, tx, Duration::from_secs(1)),
        ]
    })
    .await;
    tree.expect(&[Event::Started("cameras")]).await;
    let snapshot = tree.board.snapshot();
    assert_eq!(snapshot["root/store"].state, ChildState::Backoff, "{snapshot:?}");
    assert!(snapshot["root/store"].last_error.as_deref().is_some_and(|e| e.contains("no space")));
    // Backoffs of 1, 2 and 4 s: the fourth try starts it. Start retries do
    // not count as restarts, so the intensity of 1 is not exceeded.
    let t0 = Instant::now();
    tree.expect(&[Event::Started("store")]).await;
    assert_eq!(t0.elapsed(), Duration::from_secs(7));
    assert_eq!(tree.board.snapshot()["root/store"].state, ChildState::Up);
    assert!(tree.escalations.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_child_that_must_start_fails_the_supervisor_when_it_cannot() {
    let (tx, _events) = mpsc::unbounded_channel();
    let args = SupervisorArgs {
        path: "root".into(),
        strategy: Strategy::OneForOne,
        intensity: Intensity { max_restarts: 5, period: Duration::from_secs(10) },
        children: vec![flaky("http", 1, StartFailure::Fail, &tx)],
        board: HealthBoard::new(),
        clock: tokio_clock(),
        on_escalate: None,
    };
    let err = Actor::spawn(None, Supervisor, args).await.expect_err("the start fails");
    assert!(err.to_string().contains("child http"), "{err}");
}
