//! systemd's view of a cgroup: on a host where systemd manages the
//! unified hierarchy, the cgroup of a service or scope is a unit, and its
//! CPU limit belongs to systemd (`CPUQuota=`). Writing the unit's
//! `cpu.max` behind systemd's back works until systemd rewrites it (a
//! `daemon-reload`, a `set-property`); asking the manager for a runtime
//! property (`SetUnitProperties(unit, runtime = true, ...)`) does not, and
//! the change is gone at the next boot.
//!
//! [`UnitManager`] is that request; the enforcer asks it when an
//! antagonist's leaf cgroup is a unit ([`unit_of`]).
//!
//! # Which path is taken
//!
//! ```text
//!   antagonist's leaf cgroup
//!     |
//!     +-- unit_of() names a .service or .scope, and Systemd::connect()
//!     |   found systemd (/run/systemd/system) and a root-owned system bus
//!     |     --> SetUnitProperties(unit, runtime = true,
//!     |                           [("CPUQuotaPerSecUSec", t)])
//!     |         the old value read first from the unit object's
//!     |         Service/Scope property CPUQuotaPerSecUSec
//!     |
//!     +-- otherwise (no systemd, a slice or a plain cgroup)
//!           --> the cgroup's own cpu.max, journalled and restored
//! ```
//!
//! systemd owns the cgroups of its units: a `daemon-reload` or any
//! `systemctl set-property` re-applies the unit's `CPUQuota=` and silently
//! lifts a cap written straight into `cpu.max`, and an operator reading
//! `systemctl show` would not see it. The runtime property lives under
//! `/run/systemd/system.control/` and goes away at reboot, so a cap odin
//! failed to lift never outlives the boot. Where systemd is absent, or the
//! cgroup is not a unit, nothing else owns `cpu.max` and odin writes it.
//!
//! # D-Bus
//!
//! [`Systemd`] talks to the manager (`org.freedesktop.systemd1` at
//! `/org/freedesktop/systemd1`, interface
//! `org.freedesktop.systemd1.Manager`) on the system bus:
//! - `GetUnit(s name) -> o unit` finds a loaded unit's object; an unknown
//!   unit is the error `org.freedesktop.systemd1.NoSuchUnit`;
//! - `org.freedesktop.DBus.Properties.Get(s interface, s property) -> v`
//!   on that object reads `CPUQuotaPerSecUSec` (type `t`, microseconds of
//!   CPU time per second, `u64::MAX` for no quota) from the interface of
//!   the unit's type, `org.freedesktop.systemd1.Service` or `.Scope`;
//! - `SetUnitProperties(s name, b runtime, a(sv) properties)` with
//!   `runtime = true` sets it for this boot only.
//!
//! odin runs as root, so it trusts the bus only as far as root does: the
//! system bus socket must be a socket owned by root (or odin's own euid),
//! and the connection that owns `org.freedesktop.systemd1` must belong to
//! the same users. Every call has a deadline, so a stuck manager delays
//! odin's tick by at most [`CALL_TIMEOUT`] instead of stalling it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use zbus::address::transport::{Transport, Unix, UnixSocket};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::CgroupError;

/// The CPU quota of systemd units, set at runtime only.
pub trait UnitManager: std::fmt::Debug + Send + Sync {
    /// The unit's `CPUQuotaPerSecUSec`: CPU time per second of wall time,
    /// microseconds; `None` when it has no quota (systemd's infinity).
    fn cpu_quota(&self, unit: &str) -> Result<Option<u64>, CgroupError>;
    /// Sets (`Some`) or removes (`None`) the unit's quota for this boot.
    fn set_cpu_quota(&self, unit: &str, usec_per_sec: Option<u64>) -> Result<(), CgroupError>;
}

/// The unit whose cgroup is `cgroup` (a path as `/proc/<pid>/cgroup`
/// shows it), if its last component names a unit systemd can set a
/// property on: a service or a scope (`/system.slice/nginx.service`,
/// `/user.slice/user-1000.slice/session-2.scope`).
pub fn unit_of(cgroup: &str) -> Option<&str> {
    let last = cgroup.trim_end_matches('/').rsplit('/').next()?;
    let (name, kind) = last.rsplit_once('.')?;
    (!name.is_empty() && matches!(kind, "service" | "scope")).then_some(last)
}

/// How long one call to the manager may take before it fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The well-known name of systemd's manager on the bus.
const MANAGER_NAME: &str = "org.freedesktop.systemd1";
/// The manager's object.
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
/// The manager's interface.
const MANAGER_IFACE: &str = "org.freedesktop.systemd1.Manager";
/// The property that holds a unit's CPU quota.
const CPU_QUOTA: &str = "CPUQuotaPerSecUSec";
/// The longest unit name systemd accepts (`UNIT_NAME_MAX` less the NUL).
const UNIT_NAME_MAX: usize = 255;

/// systemd's manager on a D-Bus connection: [`UnitManager`] for real.
///
/// The calls block (zbus runs them on a small runtime of its own), so
/// they are made from odin's main loop, never from inside an async task.
#[derive(Debug)]
pub struct Systemd {
    conn: zbus::blocking::Connection,
}

impl Systemd {
    /// The manager of this machine, on the system bus. Refuses when
    /// systemd is not running (no `/run/systemd/system`), when there is no
    /// system bus, or when the bus or the manager is not root's.
    pub fn connect() -> Result<Self, CgroupError> {
        Self::connect_under(Path::new("/"))
    }

    /// [`Systemd::connect`] with `root` in place of `/`: systemd is
    /// running when `<root>/run/systemd/system` is a directory (what
    /// `sd_booted()` checks), and the bus is the socket
    /// `<root>/run/dbus/system_bus_socket`.
    pub fn connect_under(root: &Path) -> Result<Self, CgroupError> {
        let booted = root.join("run/systemd/system");
        match std::fs::symlink_metadata(&booted) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(no_manager(format!(
                    "systemd is not running ({} is not a directory)",
                    booted.display()
                )));
            }
            Err(e) => {
                return Err(no_manager(format!(
                    "systemd is not running ({}: {e})",
                    booted.display()
                )));
            }
        }
        let socket = root.join("run/dbus/system_bus_socket");
        let meta = std::fs::symlink_metadata(&socket)
            .map_err(|e| no_manager(format!("no system bus ({}: {e})", socket.display())))?;
        if !meta.file_type().is_socket() {
            return Err(no_manager(format!(
                "the system bus {} is not a socket",
                socket.display()
            )));
        }
        if !trusted_uid(meta.uid()) {
            return Err(no_manager(format!(
                "the system bus {} is owned by uid {}, not root",
                socket.display(),
                meta.uid()
            )));
        }
        let address = zbus::Address::from(Transport::Unix(Unix::new(UnixSocket::File(socket))));
        Self::connect_address(address)
    }

    /// The manager on the bus at `address` (a D-Bus address such as
    /// `unix:path=/tmp/bus`), without the checks on `/run` that
    /// [`Systemd::connect`] makes: for a private bus.
    pub fn connect_to(address: &str) -> Result<Self, CgroupError> {
        let parsed = zbus::Address::from_str(address)
            .map_err(|e| no_manager(format!("bad D-Bus address {address:?}: {e}")))?;
        Self::connect_address(parsed)
    }

    /// Connects, then checks that the manager's name is owned by root.
    fn connect_address(address: zbus::Address) -> Result<Self, CgroupError> {
        let shown = address.to_string();
        let conn = zbus::blocking::connection::Builder::address(address)
            .and_then(|b| b.method_timeout(CALL_TIMEOUT).build())
            .map_err(|e| no_manager(format!("connecting to the bus at {shown}: {e}")))?;
        let owner: u32 = conn
            .call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "GetConnectionUnixUser",
                &(MANAGER_NAME,),
            )
            .and_then(|reply| reply.body().deserialize())
            .map_err(|e| {
                no_manager(format!(
                    "{MANAGER_NAME} is not on the bus at {shown}: {}",
                    dbus_message(&e)
                ))
            })?;
        if !trusted_uid(owner) {
            return Err(no_manager(format!(
                "{MANAGER_NAME} on the bus at {shown} belongs to uid {owner}, not root"
            )));
        }
        Ok(Self { conn })
    }

    /// Calls `method` on the manager with `body`.
    fn call<B>(&self, unit: &str, method: &str, body: &B) -> Result<zbus::Message, CgroupError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        self.conn
            .call_method(
                Some(MANAGER_NAME),
                MANAGER_PATH,
                Some(MANAGER_IFACE),
                method,
                body,
            )
            .map_err(|e| unit_error(unit, format!("{method}: {}", dbus_message(&e))))
    }
}

impl UnitManager for Systemd {
    fn cpu_quota(&self, unit: &str) -> Result<Option<u64>, CgroupError> {
        let iface = unit_interface(unit)?;
        let path: OwnedObjectPath = self
            .call(unit, "GetUnit", &(unit,))?
            .body()
            .deserialize()
            .map_err(|e| unit_error(unit, format!("GetUnit answered {e}")))?;
        let value: OwnedValue = self
            .conn
            .call_method(
                Some(MANAGER_NAME),
                &path,
                Some("org.freedesktop.DBus.Properties"),
                "Get",
                &(iface, CPU_QUOTA),
            )
            .and_then(|reply| reply.body().deserialize())
            .map_err(|e| {
                unit_error(
                    unit,
                    format!(
                        "reading {iface}.{CPU_QUOTA} of {}: {}",
                        path.as_str(),
                        dbus_message(&e)
                    ),
                )
            })?;
        let usec = u64::try_from(&*value).map_err(|_| {
            unit_error(
                unit,
                format!("{CPU_QUOTA} is of type {}, not t", value.value_signature()),
            )
        })?;
        Ok((usec != u64::MAX).then_some(usec))
    }

    fn set_cpu_quota(&self, unit: &str, usec_per_sec: Option<u64>) -> Result<(), CgroupError> {
        unit_interface(unit)?;
        let usec = match usec_per_sec {
            None => u64::MAX,
            Some(0) => {
                return Err(unit_error(
                    unit,
                    "a CPU quota of 0 would stop the unit; systemd refuses it".into(),
                ));
            }
            Some(u64::MAX) => {
                return Err(unit_error(
                    unit,
                    format!(
                        "a CPU quota of {} us/s is systemd's \"no quota\"; ask for None",
                        u64::MAX
                    ),
                ));
            }
            Some(q) => q,
        };
        let properties = [(CPU_QUOTA, Value::U64(usec))];
        self.call(unit, "SetUnitProperties", &(unit, true, &properties[..]))?;
        Ok(())
    }
}

/// The D-Bus interface that carries `unit`'s cgroup properties, once the
/// name is known to be a plain unit name: no path, no control characters,
/// only the characters systemd allows, a service or a scope.
fn unit_interface(unit: &str) -> Result<&'static str, CgroupError> {
    let refuse = |why: &str| CgroupError::Systemd {
        unit: unit.escape_debug().to_string(),
        message: format!("not a plain unit name: {why}"),
    };
    if unit.len() > UNIT_NAME_MAX {
        return Err(refuse(&format!("longer than {UNIT_NAME_MAX} bytes")));
    }
    if unit.contains('/') {
        return Err(refuse("it contains '/'"));
    }
    if unit.chars().any(char::is_control) {
        return Err(refuse("it contains a control character"));
    }
    if let Some(c) = unit
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":-_.\\@".contains(*c)))
    {
        return Err(refuse(&format!("{c:?} is not allowed in a unit name")));
    }
    let (name, kind) = unit.rsplit_once('.').unwrap_or((unit, ""));
    match kind {
        _ if name.is_empty() => Err(refuse("the name before the suffix is empty")),
        "service" => Ok("org.freedesktop.systemd1.Service"),
        "scope" => Ok("org.freedesktop.systemd1.Scope"),
        _ => Err(refuse("it ends in neither .service nor .scope")),
    }
}

/// Whether a file or peer of that uid may steer odin: root's, or odin's
/// own when it runs as another user.
fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// The error when the manager cannot be reached at all (no unit was
/// asked about yet, so the error's unit is `manager`).
fn no_manager(message: String) -> CgroupError {
    CgroupError::Systemd {
        unit: "manager".to_string(),
        message,
    }
}

/// The error of a call about `unit`.
fn unit_error(unit: &str, message: String) -> CgroupError {
    CgroupError::Systemd {
        unit: unit.to_string(),
        message,
    }
}

/// A D-Bus failure as a sentence: a method error by its name and text
/// (`org.freedesktop.systemd1.NoSuchUnit: Unit x.service not loaded.`).
fn dbus_message(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, Some(text), _) => format!("{}: {text}", name.as_str()),
        zbus::Error::MethodError(name, None, _) => name.as_str().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_scopes_are_units_slices_and_plain_cgroups_are_not() {
        assert_eq!(
            unit_of("/system.slice/nginx.service"),
            Some("nginx.service")
        );
        assert_eq!(
            unit_of("/user.slice/user-1000.slice/session-2.scope"),
            Some("session-2.scope")
        );
        assert_eq!(unit_of("/system.slice"), None);
        assert_eq!(unit_of("/batch/jobs"), None);
        assert_eq!(unit_of("/"), None);
        assert_eq!(unit_of("/x/.service"), None);
    }

    #[test]
    fn only_plain_service_and_scope_names_are_units_to_ask_about() {
        assert_eq!(
            unit_interface("nginx.service").unwrap(),
            "org.freedesktop.systemd1.Service"
        );
        assert_eq!(
            unit_interface("session-2.scope").unwrap(),
            "org.freedesktop.systemd1.Scope"
        );
        assert_eq!(
            unit_interface("getty@tty1.service").unwrap(),
            "org.freedesktop.systemd1.Service"
        );
        assert!(unit_interface("docker-0a1b\\x2d2c.scope").is_ok());
        let long = format!("{}.service", "a".repeat(UNIT_NAME_MAX));
        for bad in [
            "",
            ".service",
            "service",
            "user.slice",
            "a/b.service",
            "../../etc/x.service",
            "x.service\n",
            "x\u{7f}.service",
            "x y.service",
            "n\u{e9}.service",
            long.as_str(),
        ] {
            let err = unit_interface(bad).unwrap_err();
            let CgroupError::Systemd { unit, message } = &err else {
                panic!("{bad:?}: {err:?}");
            };
            assert!(
                message.starts_with("not a plain unit name"),
                "{bad:?}: {message}"
            );
            assert!(!unit.chars().any(char::is_control), "{bad:?}: {unit:?}");
        }
    }
}
