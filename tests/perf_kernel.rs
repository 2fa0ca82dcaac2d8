//! perf_event_open against the real kernel, through `PerfCounters`'
//! public API: groups open (or fail classified), count the work done,
//! context switches and migrations, per-CPU where permitted, and close
//! their file descriptors.

use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use odin::cpulist::CpuSet;
use odin::monitor::perf::{
    CounterKind, CounterSource, GroupKind, OpenClass, PerfCounters, PerfError, Target, classify,
    read_capabilities,
};
use odin::pipeline::affinity::{Affinity, SchedAffinity, pin_current_thread};
use odin::thread::gettid;

/// Tests that open perf fds run one at a time, so fd numbers and CPU 0's
/// counts are not disturbed by each other.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec the call writes to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Burns `ns` of this thread's CPU time; returns what it used.
fn spin_cpu(ns: u64) -> u64 {
    let start = thread_cpu_ns();
    let mut x = 1u64;
    while thread_cpu_ns() - start < ns {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    thread_cpu_ns() - start
}

enum Cmd {
    Spin(u64),
    PingPong(u32),
    Pin(usize),
    Exit,
}

/// A thread that obeys commands and replies with the CPU time it used.
struct Worker {
    tid: i32,
    cmd: mpsc::Sender<Cmd>,
    done: mpsc::Receiver<u64>,
    ping: mpsc::SyncSender<()>,
    pong: mpsc::Receiver<()>,
    join: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn() -> Worker {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let (ping_tx, ping_rx) = mpsc::sync_channel::<()>(0);
        let (pong_tx, pong_rx) = mpsc::sync_channel::<()>(0);
        let (tid_tx, tid_rx) = mpsc::channel();
        let join = std::thread::spawn(move || {
            tid_tx.send(gettid()).unwrap();
            for cmd in cmd_rx {
                let used = match cmd {
                    Cmd::Spin(ns) => spin_cpu(ns),
                    Cmd::PingPong(n) => {
                        for _ in 0..n {
                            ping_rx.recv().unwrap();
                            pong_tx.send(()).unwrap();
                        }
                        0
                    }
                    Cmd::Pin(cpu) => {
                        pin_current_thread(&CpuSet::single(cpu)).unwrap();
                        0
                    }
                    Cmd::Exit => break,
                };
                done_tx.send(used).unwrap();
            }
        });
        Worker {
            tid: tid_rx.recv().unwrap(),
            cmd: cmd_tx,
            done: done_rx,
            ping: ping_tx,
            pong: pong_rx,
            join: Some(join),
        }
    }

    fn run(&self, cmd: Cmd) -> u64 {
        self.cmd.send(cmd).unwrap();
        self.done.recv().unwrap()
    }

    /// `n` round trips in which the worker blocks on `recv` each time.
    fn ping_pong(&self, n: u32) {
        self.cmd.send(Cmd::PingPong(n)).unwrap();
        for _ in 0..n {
            self.ping.send(()).unwrap();
            self.pong.recv().unwrap();
        }
        self.done.recv().unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.cmd.send(Cmd::Exit);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn online() -> CpuSet {
    odin::topology::online_cpus(std::path::Path::new("/")).unwrap()
}

fn perf_fds() -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let link = std::fs::read_link(e.path()).ok()?;
            (link.to_str()? == "anon_inode:[perf_event]")
                .then(|| e.file_name().to_str()?.parse().ok())
                .flatten()
        })
        .collect()
}

#[test]
fn hardware_group_opens_or_fails_classified() {
    let _s = serial();
    let mut pc = PerfCounters::new();
    match pc.open(Target::Thread(gettid()), GroupKind::Hardware) {
        Ok(opened) => {
            println!("hardware counters: {opened:?}");
            assert!(opened.counting.contains(&CounterKind::Instructions));
            spin_cpu(5_000_000);
            let s = pc.read(opened.handle).unwrap();
            if s.time_running_ns > 0 {
                assert!(s.instructions.unwrap() > 1_000_000, "{s:?}");
                assert!(s.cycles.is_some(), "{s:?}");
            }
            assert_eq!(s.task_clock_ns, None);
        }
        Err(e) => {
            let PerfError::Open {
                class,
                ref source,
                event,
                ..
            } = e
            else {
                panic!("not an open error: {e}");
            };
            let errno = source.raw_os_error().unwrap();
            println!("hardware counters: errno {errno}: {e}");
            assert_eq!(class, classify(errno), "{e}");
            assert_eq!(event, CounterKind::Instructions);
            // As root, only a missing PMU stops it.
            if read_capabilities(std::path::Path::new("/")).is_ok_and(|c| c.perfmon()) {
                assert_eq!(class, OpenClass::Unsupported, "{e}");
            }
        }
    }
}

#[test]
fn task_clock_follows_the_work_done() {
    let _s = serial();
    let w = Worker::spawn();
    let mut pc = PerfCounters::new();
    let opened = pc.open(Target::Thread(w.tid), GroupKind::Software).unwrap();
    assert_eq!(opened.counting, GroupKind::Software.counters());
    assert!(opened.missing.is_empty() && !opened.user_only, "{opened:?}");
    let mut prev = pc.read(opened.handle).unwrap();
    let mut prev_delta = 0;
    for ms in [20u64, 40, 80] {
        let used = w.run(Cmd::Spin(ms * 1_000_000));
        let cur = pc.read(opened.handle).unwrap();
        let delta = cur.task_clock_ns.unwrap() - prev.task_clock_ns.unwrap();
        assert!(
            delta * 10 >= used * 9,
            "spun {used} ns of CPU, task-clock grew {delta} ns"
        );
        assert!(delta > prev_delta, "{ms} ms: {delta} <= {prev_delta}");
        // Software groups are never multiplexed.
        assert_eq!(cur.time_enabled_ns, cur.time_running_ns);
        assert!(cur.time_enabled_ns > prev.time_enabled_ns);
        assert_eq!(cur.instructions, None);
        prev_delta = delta;
        prev = cur;
    }
}

#[test]
fn context_switches_count_blocking_and_migrations_count_moves() {
    let _s = serial();
    let cpus = online();
    let first = cpus.iter().next().unwrap();
    let w = Worker::spawn();
    let mut pc = PerfCounters::new();
    let opened = pc.open(Target::Thread(w.tid), GroupKind::Software).unwrap();

    // Both threads on one CPU: each round trip needs the worker off the
    // CPU (blocked in recv) before this thread can answer.
    w.run(Cmd::Pin(first));
    let me = SchedAffinity;
    let mine = Affinity::get(&me, 0).unwrap();
    pin_current_thread(&CpuSet::single(first)).unwrap();
    let before = pc.read(opened.handle).unwrap();
    w.ping_pong(20);
    let after = pc.read(opened.handle).unwrap();
    pin_current_thread(&mine).unwrap();
    let cs = after.context_switches.unwrap() - before.context_switches.unwrap();
    assert!(cs >= 20, "20 blocking recvs, {cs} context switches");
    // Pinned: no migrations; values went to the right fields.
    assert_eq!(after.cpu_migrations, before.cpu_migrations, "{after:?}");

    let Some(other) = cpus.iter().nth(1) else {
        println!("skip migration check: one CPU");
        return;
    };
    w.run(Cmd::Pin(other));
    let moved = pc.read(opened.handle).unwrap();
    assert!(
        moved.cpu_migrations.unwrap() > after.cpu_migrations.unwrap(),
        "{after:?} -> {moved:?}"
    );
}

#[test]
fn per_cpu_software_group_counts() {
    let _s = serial();
    let mut pc = PerfCounters::new();
    let opened = match pc.open(Target::Cpu(0), GroupKind::Software) {
        Ok(o) => o,
        Err(e) if e.class() == Some(OpenClass::NotPermitted) => {
            println!("skip: CPU-wide counters need root or CAP_PERFMON: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert!(opened.missing.is_empty(), "{opened:?}");
    let before = pc.read(opened.handle).unwrap();
    let w = Worker::spawn();
    w.run(Cmd::Pin(0));
    let mut last_cs = before.context_switches.unwrap();
    for _ in 0..2 {
        w.run(Cmd::Spin(10_000_000));
        w.ping_pong(5);
        std::thread::sleep(Duration::from_millis(1));
        let cur = pc.read(opened.handle).unwrap();
        assert!(cur.context_switches.unwrap() > last_cs, "{cur:?}");
        last_cs = cur.context_switches.unwrap();
    }
    let after = pc.read(opened.handle).unwrap();
    let clock = after.task_clock_ns.unwrap() - before.task_clock_ns.unwrap();
    assert!(clock >= 10_000_000, "CPU 0 ran a 10 ms spin, clock {clock}");
    assert!(after.time_enabled_ns > before.time_enabled_ns);
}

#[test]
fn fds_close_with_the_group_and_on_drop() {
    let _s = serial();
    let before = perf_fds();
    let mut pc = PerfCounters::new();
    let a = pc
        .open(Target::Thread(gettid()), GroupKind::Software)
        .unwrap();
    let b = pc
        .open(Target::Thread(gettid()), GroupKind::Software)
        .unwrap();
    assert_ne!(a.handle, b.handle);
    assert_eq!(perf_fds().len(), before.len() + 6);
    pc.close(a.handle);
    assert_eq!(perf_fds().len(), before.len() + 3);
    assert!(matches!(
        pc.read(a.handle),
        Err(PerfError::UnknownHandle(_))
    ));
    // The freed slot is reused.
    let c = pc
        .open(Target::Thread(gettid()), GroupKind::Software)
        .unwrap();
    assert_eq!(c.handle, a.handle);
    pc.read(b.handle).unwrap();
    drop(pc);
    assert_eq!(perf_fds(), before);
}

#[test]
fn opening_a_missing_thread_is_other() {
    let _s = serial();
    let err = PerfCounters::new()
        .open(Target::Thread(i32::MAX), GroupKind::Software)
        .unwrap_err();
    assert_eq!(err.class(), Some(OpenClass::Other(libc::ESRCH)), "{err}");
    assert!(err.to_string().contains("thread 2147483647"), "{err}");
}
