//! `cgroup::systemd::Systemd` against a real D-Bus: a private
//! `dbus-daemon` per test, and on it a fake of systemd's manager served with
//! zbus's object server. The fake answers as systemd does (`GetUnit`, the
//! unit objects' `CPUQuotaPerSecUSec`, `SetUnitProperties`, `NoSuchUnit` for
//! an unknown unit) and records every call it gets with its signature.
//!
//! Outside CI a machine without `dbus-daemon` skips these tests with a note;
//! in CI (`.ci/run` installs Debian's `dbus-daemon`) they fail.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use odin::cgroup::CgroupError;
use odin::cgroup::systemd::{Systemd, UnitManager};
use zbus::message::Header;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

/// `dbus-daemon`, or `None` (with a note) outside CI.
fn dbus_daemon() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("dbus-daemon"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        common::skip("dbus-daemon is not installed (apt-get install dbus-daemon; .ci/run does)");
    }
    found
}

/// A private bus: one `dbus-daemon` listening on `socket`, killed on drop.
struct Bus {
    child: Child,
    address: String,
    _config: tempfile::TempDir,
}

impl Bus {
    /// Starts a bus on `socket` that anyone may connect to and own names on;
    /// it is ready once it has printed its address.
    fn start(daemon: &Path, socket: &Path) -> Bus {
        let config = tempfile::tempdir().unwrap();
        let file = config.path().join("bus.conf");
        std::fs::write(
            &file,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(daemon)
            .arg(format!("--config-file={}", file.display()))
            .args(["--nofork", "--print-address"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // As root it complains it may not raise its fd limit: kept
            // aside, shown when it fails.
            .stderr(std::fs::File::create(config.path().join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_string();
        if address.is_empty() {
            let status = child.wait().unwrap();
            let log = std::fs::read_to_string(config.path().join("daemon.log")).unwrap();
            panic!("dbus-daemon printed no address ({status}):\n{log}");
        }
        Bus {
            child,
            address,
            _config: config,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One call the fake manager answered.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    /// The method.
    member: String,
    /// The body's signature as it came over the wire.
    signature: String,
    /// The unit named.
    unit: String,
    /// SetUnitProperties' `runtime`.
    runtime: Option<bool>,
    /// SetUnitProperties' properties.
    properties: Vec<(String, OwnedValue)>,
}

/// What the fake knows: the loaded units' quotas (`u64::MAX` for none) and
/// the calls so far.
#[derive(Debug, Default)]
struct State {
    quotas: BTreeMap<String, u64>,
    calls: Vec<Call>,
}

type Shared = Arc<Mutex<State>>;

/// The errors systemd answers with, by their D-Bus names.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop")]
enum SystemdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    #[zbus(name = "systemd1.NoSuchUnit")]
    NoSuchUnit(String),
    #[zbus(name = "DBus.Error.InvalidArgs")]
    InvalidArgs(String),
}

/// A unit's object path as systemd makes it: every byte but ASCII letters
/// and digits becomes `_` and two hex digits.
fn unit_path(unit: &str) -> String {
    let mut p = String::from("/org/freedesktop/systemd1/unit/");
    for b in unit.bytes() {
        if b.is_ascii_alphanumeric() {
            p.push(b as char);
        } else {
            p.push_str(&format!("_{b:02x}"));
        }
    }
    p
}

struct Manager(Shared);

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn get_unit(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
    ) -> Result<OwnedObjectPath, SystemdError> {
        let mut state = self.0.lock().unwrap();
        state.calls.push(Call {
            member: "GetUnit".into(),
            signature: header.signature().to_string_no_parens(),
            unit: name.clone(),
            runtime: None,
            properties: Vec::new(),
        });
        if !state.quotas.contains_key(&name) {
            return Err(SystemdError::NoSuchUnit(format!("Unit {name} not loaded.")));
        }
        Ok(OwnedObjectPath::try_from(unit_path(&name)).unwrap())
    }

    fn set_unit_properties(
        &self,
        #[zbus(header)] header: Header<'_>,
        name: String,
        runtime: bool,
        properties: Vec<(String, OwnedValue)>,
    ) -> Result<(), SystemdError> {
        let mut state = self.0.lock().unwrap();
        state.calls.push(Call {
            member: "SetUnitProperties".into(),
            signature: header.signature().to_string_no_parens(),
            unit: name.clone(),
            runtime: Some(runtime),
            properties: properties
                .iter()
                .map(|(k, v)| (k.clone(), v.try_clone().unwrap()))
                .collect(),
        });
        if !state.quotas.contains_key(&name) {
            return Err(SystemdError::NoSuchUnit(format!("Unit {name} not found.")));
        }
        // systemd checks every assignment before applying any.
        let mut quota = None;
        for (key, value) in &properties {
            match (key.as_str(), &**value) {
                ("CPUQuotaPerSecUSec", Value::U64(0)) => {
                    return Err(SystemdError::InvalidArgs(
                        "CPUQuotaPerSecUSec= value out of range".into(),
                    ));
                }
                ("CPUQuotaPerSecUSec", Value::U64(u)) => quota = Some(*u),
                _ => {
                    return Err(SystemdError::InvalidArgs(format!(
                        "Cannot set property {key}, or unknown property."
                    )));
                }
            }
        }
        if let Some(q) = quota {
            state.quotas.insert(name, q);
        }
        Ok(())
    }
}

/// A service unit's object.
struct ServiceUnit(Shared, String);

#[zbus::interface(name = "org.freedesktop.systemd1.Service")]
impl ServiceUnit {
    #[zbus(property, name = "CPUQuotaPerSecUSec")]
    fn cpu_quota_per_sec_usec(&self) -> u64 {
        self.0.lock().unwrap().quotas[&self.1]
    }
}

/// A scope unit's object.
struct ScopeUnit(Shared, String);

#[zbus::interface(name = "org.freedesktop.systemd1.Scope")]
impl ScopeUnit {
    #[zbus(property, name = "CPUQuotaPerSecUSec")]
    fn cpu_quota_per_sec_usec(&self) -> u64 {
        self.0.lock().unwrap().quotas[&self.1]
    }
}

/// The fake manager on the bus at `address`, owning
/// `org.freedesktop.systemd1`, with `units` loaded (name, quota).
fn serve_manager(address: &str, units: &[(&str, u64)]) -> (zbus::blocking::Connection, Shared) {
    let state = Shared::default();
    let mut builder = zbus::blocking::connection::Builder::address(address)
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at("/org/freedesktop/systemd1", Manager(state.clone()))
        .unwrap();
    for &(unit, quota) in units {
        state.lock().unwrap().quotas.insert(unit.to_string(), quota);
        let path = unit_path(unit);
        builder = if unit.ends_with(".scope") {
            builder.serve_at(path, ScopeUnit(state.clone(), unit.to_string()))
        } else {
            builder.serve_at(path, ServiceUnit(state.clone(), unit.to_string()))
        }
        .unwrap();
    }
    (builder.build().unwrap(), state)
}

fn calls(state: &Shared) -> Vec<Call> {
    state.lock().unwrap().calls.clone()
}

#[test]
fn the_quota_is_set_at_runtime_in_one_call_and_read_back() {
    let Some(daemon) = dbus_daemon() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(&daemon, &dir.path().join("bus"));
    let (_fake, state) = serve_manager(
        &bus.address,
        &[("nginx.service", u64::MAX), ("session-2.scope", 30_000)],
    );
    let systemd = Systemd::connect_to(&bus.address).unwrap();

    assert_eq!(systemd.cpu_quota("nginx.service").unwrap(), None);
    // A scope's property is on the Scope interface: the fake serves no
    // Service interface there, so this also proves the interface chosen.
    assert_eq!(systemd.cpu_quota("session-2.scope").unwrap(), Some(30_000));
    let before = calls(&state);
    assert_eq!(
        before
            .iter()
            .map(|c| (c.member.as_str(), c.signature.as_str(), c.unit.as_str()))
            .collect::<Vec<_>>(),
        [
            ("GetUnit", "s", "nginx.service"),
            ("GetUnit", "s", "session-2.scope")
        ]
    );

    systemd
        .set_cpu_quota("nginx.service", Some(200_000))
        .unwrap();
    let set = &calls(&state)[before.len()..];
    assert_eq!(set.len(), 1, "exactly one call: {set:?}");
    let call = &set[0];
    assert_eq!(call.member, "SetUnitProperties");
    assert_eq!(call.signature, "sba(sv)");
    assert_eq!(call.unit, "nginx.service");
    assert_eq!(
        call.runtime,
        Some(true),
        "the change must not outlive the boot"
    );
    assert_eq!(call.properties.len(), 1);
    let (key, value) = &call.properties[0];
    assert_eq!(key, "CPUQuotaPerSecUSec");
    assert_eq!(value.value_signature().to_string(), "t");
    assert_eq!(**value, Value::U64(200_000));
    assert_eq!(systemd.cpu_quota("nginx.service").unwrap(), Some(200_000));

    // No quota is systemd's infinity.
    systemd.set_cpu_quota("nginx.service", None).unwrap();
    let last = calls(&state).pop().unwrap();
    assert_eq!(last.member, "SetUnitProperties");
    assert_eq!(last.runtime, Some(true));
    assert_eq!(*last.properties[0].1, Value::U64(u64::MAX));
    assert_eq!(systemd.cpu_quota("nginx.service").unwrap(), None);
    assert_eq!(state.lock().unwrap().quotas["nginx.service"], u64::MAX);
}

#[test]
fn an_unknown_unit_is_an_error_naming_it() {
    let Some(daemon) = dbus_daemon() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(&daemon, &dir.path().join("bus"));
    let (_fake, state) = serve_manager(&bus.address, &[("nginx.service", u64::MAX)]);
    let systemd = Systemd::connect_to(&bus.address).unwrap();

    let err = systemd.cpu_quota("ghost.service").unwrap_err();
    let CgroupError::Systemd { unit, message } = &err else {
        panic!("not a systemd error: {err:?}");
    };
    assert_eq!(unit, "ghost.service");
    assert!(
        message.contains("org.freedesktop.systemd1.NoSuchUnit"),
        "{message}"
    );
    assert!(err.to_string().contains("ghost.service"), "{err}");

    let err = systemd
        .set_cpu_quota("ghost.service", Some(100_000))
        .unwrap_err();
    assert!(
        matches!(&err, CgroupError::Systemd { unit, message }
            if unit == "ghost.service" && message.contains("NoSuchUnit")),
        "{err:?}"
    );
    // The known unit was left alone.
    assert_eq!(state.lock().unwrap().quotas["nginx.service"], u64::MAX);
}

#[test]
fn names_that_are_not_plain_units_never_reach_the_manager() {
    let Some(daemon) = dbus_daemon() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bus = Bus::start(&daemon, &dir.path().join("bus"));
    let (_fake, state) = serve_manager(&bus.address, &[("nginx.service", u64::MAX)]);
    let systemd = Systemd::connect_to(&bus.address).unwrap();

    for bad in [
        "",
        ".service",
        "nginx",
        "system.slice",
        "init.target",
        "../nginx.service",
        "a/b.service",
        "nginx.service\n",
        "ng\u{1b}[2Jinx.service",
        "nginx .service",
    ] {
        let err = systemd.cpu_quota(bad).unwrap_err();
        assert!(
            matches!(&err, CgroupError::Systemd { message, .. } if message.contains("not a plain unit name")),
            "{bad:?}: {err:?}"
        );
        assert!(
            !err.to_string().chars().any(char::is_control),
            "the error repeats the control characters: {err:?}"
        );
        systemd.set_cpu_quota(bad, Some(100_000)).unwrap_err();
    }
    // A quota systemd would refuse, or that means "none", is refused here.
    for q in [0, u64::MAX] {
        let err = systemd.set_cpu_quota("nginx.service", Some(q)).unwrap_err();
        assert!(matches!(err, CgroupError::Systemd { .. }), "{q}: {err:?}");
    }
    assert_eq!(calls(&state), [], "nothing was sent");
}

#[test]
fn without_systemd_or_its_bus_connect_refuses_and_says_why() {
    let root = tempfile::tempdir().unwrap();
    let err = Systemd::connect_under(root.path()).unwrap_err().to_string();
    assert!(err.contains("systemd is not running"), "{err}");
    assert!(err.contains("run/systemd/system"), "{err}");

    std::fs::create_dir_all(root.path().join("run/systemd/system")).unwrap();
    let err = Systemd::connect_under(root.path()).unwrap_err().to_string();
    assert!(err.contains("no system bus"), "{err}");
    assert!(err.contains("run/dbus/system_bus_socket"), "{err}");

    // A plain file where the socket should be.
    std::fs::create_dir_all(root.path().join("run/dbus")).unwrap();
    let socket = root.path().join("run/dbus/system_bus_socket");
    std::fs::write(&socket, "").unwrap();
    let err = Systemd::connect_under(root.path()).unwrap_err().to_string();
    assert!(err.contains("is not a socket"), "{err}");
    std::fs::remove_file(&socket).unwrap();

    // This machine: either systemd runs it, or connect says it does not.
    if !Path::new("/run/systemd/system").is_dir() {
        let err = Systemd::connect().unwrap_err().to_string();
        assert!(err.contains("/run/systemd/system"), "{err}");
    }

    let Some(daemon) = dbus_daemon() else { return };
    let bus = Bus::start(&daemon, &socket);
    // A bus, but no manager on it.
    let err = Systemd::connect_under(root.path()).unwrap_err().to_string();
    assert!(
        err.contains("org.freedesktop.systemd1 is not on the bus"),
        "{err}"
    );
    let err = Systemd::connect_to(&bus.address).unwrap_err().to_string();
    assert!(
        err.contains("org.freedesktop.systemd1 is not on the bus"),
        "{err}"
    );

    let (_fake, _state) = serve_manager(&bus.address, &[("nginx.service", 50_000)]);
    let systemd = Systemd::connect_under(root.path()).unwrap();
    assert_eq!(systemd.cpu_quota("nginx.service").unwrap(), Some(50_000));

    // A socket that is not root's is not the system bus.
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&socket, Some(65534), Some(65534)).unwrap();
        let err = Systemd::connect_under(root.path()).unwrap_err().to_string();
        assert!(err.contains("owned by uid 65534"), "{err}");
    } else {
        common::skip("the socket not owned by root: giving it away needs root");
    }

    let err = Systemd::connect_to("no-such-transport:x=1")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad D-Bus address"), "{err}");
}

/// Environment variable that turns this test binary into a fake manager on
/// the bus it names (see `fake_manager_process`).
const FAKE_MANAGER_BUS: &str = "ODIN_TEST_FAKE_MANAGER_BUS";

#[test]
#[ignore = "the fake manager process for a_manager_that_is_not_roots_is_refused"]
fn fake_manager_process() {
    let address = std::env::var(FAKE_MANAGER_BUS).expect("run by another test");
    let (_fake, _state) = serve_manager(&address, &[("nginx.service", u64::MAX)]);
    println!("fake-manager-ready");
    // Serve until the parent kills this process.
    loop {
        std::thread::park();
    }
}

#[test]
fn a_manager_that_is_not_roots_is_refused() {
    let Some(daemon) = dbus_daemon() else { return };
    if !nix::unistd::geteuid().is_root() {
        common::skip("running the fake manager as another user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The other user reaches the socket through the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bus = Bus::start(&daemon, &dir.path().join("bus"));
    // This test binary again, as nobody, serving the fake manager; linked
    // (or copied) into the open directory, since the build's own may sit
    // where nobody cannot reach it.
    let exe = dir.path().join("fake-manager");
    let this = std::env::current_exe().unwrap();
    if std::fs::hard_link(&this, &exe).is_err() {
        std::fs::copy(&this, &exe).unwrap();
    }
    let mut fake = Command::new(&exe)
        .args([
            "--ignored",
            "--exact",
            "fake_manager_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FAKE_MANAGER_BUS, &bus.address)
        .current_dir(dir.path())
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let kill = KillOnDrop(&mut fake);
    let mut out = BufReader::new(kill.0.stdout.take().unwrap());
    let mut line = String::new();
    // libtest prints the test's name on the same line before its output.
    while out.read_line(&mut line).unwrap() > 0 && !line.trim_end().ends_with("fake-manager-ready")
    {
        line.clear();
    }
    assert!(
        line.trim_end().ends_with("fake-manager-ready"),
        "the fake manager did not start as uid 65534 (can it run {}?)",
        exe.display()
    );
    let err = Systemd::connect_to(&bus.address).unwrap_err().to_string();
    assert!(err.contains("belongs to uid 65534, not root"), "{err}");
}

/// Kills and reaps the child when the test ends, passed or failed.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
