"""Typed configuration, loaded from TOML and validated by msgspec.

Every section is a frozen ``msgspec.Struct`` with defaults, so an empty file
is a working configuration. Validation errors are turned into one line that
names the file, the dotted key and what is wrong, e.g.::

    phalanx.toml: workers.count: Expected `int` >= 0, got -1

Unknown keys are errors too (``forbid_unknown_fields``): a typo in a key
must not silently fall back to a default.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from supervisor.errors import ConfigError

PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
ModuleName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")]


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class DaemonSection(_Section, frozen=True):
    # Empty means: $PHALANX_RUNTIME_DIR, else $RUNTIME_DIRECTORY (systemd),
    # else $XDG_RUNTIME_DIR/phalanx, else /tmp/phalanx-<uid>.
    runtime_dir: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"


class WorkersSection(_Section, frozen=True):
    count: NonNegInt = 0  # 0: one per CPU
    start_method: Literal["forkserver", "spawn", "fork"] = "forkserver"
    # Extra modules to import in the forkserver before any worker forks.
    preload: list[ModuleName] = []
    # Upper bound on tasks a worker may hold at once (prefetch window).
    max_prefetch: PositiveInt = 256
    # Recycling: a worker that has run this many tasks, or whose RSS passed
    # max_memory_mb (checked every second, between tasks), finishes what it
    # holds and is replaced. 0: never. Each worker's task limit is raised by
    # a random 0..recycle_jitter fraction so workers do not recycle at once.
    max_tasks_per_worker: NonNegInt = 0
    max_memory_mb: NonNegInt = 0
    recycle_jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    # Development: poll the task modules' files once a second and roll the
    # workers (as `phalanxctl reload` does) when one changed. Off in
    # production: a half-saved file would be loaded as it is.
    reload_on_change: bool = False
    # Credit advertised to clients (pong): each running worker counts for
    # itself plus this many queued tasks, so a client routing over several
    # daemons keeps every worker fed and holds back the rest for daemons
    # with room (docs/PROTOCOL.md, "credit").
    credit_prefetch: NonNegInt = 2


class EndpointsSection(_Section, frozen=True):
    intake: str = "tcp://127.0.0.1:7455"
    publisher: str = "tcp://127.0.0.1:7456"
    control: str = ""  # empty: ipc://<runtime_dir>/control.sock
    # Also listen on ipc://<runtime_dir>/intake.sock and publisher.sock, which
    # a client on this host (same user) uses by default: loopback TCP costs
    # every message two trips through the kernel's network stack.
    local: bool = True


class CurveSection(_Section, frozen=True):
    # CURVE encryption and client authentication for intake and publisher,
    # required for any endpoint beyond loopback. Both files come from
    # `phalanxctl keygen`: the server's secret key file (mode 0600), and a
    # directory whose *.key files are the public keys of allowed clients.
    secret_key_file: str = ""
    authorized_keys_dir: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.secret_key_file)


class TasksSection(_Section, frozen=True):
    allow: list[ModuleName] = msgspec.field(default_factory=lambda: ["workers.builtin"])
    timeout: NonNegFloat = 0.0  # seconds a task may run; 0 means no limit
    max_attempts: PositiveInt = 3
    # Most attempts a request may ask for (its max_attempts); more is
    # refused with LimitExceeded, so one request cannot make a task that
    # kills its worker run (and kill workers) without end.
    max_attempts_limit: PositiveInt = 10
    # A task that ran past its timeout is usually slow, not unlucky: by
    # default it fails at once instead of using its remaining attempts.
    retry_timeouts: bool = False
    max_message_bytes: PositiveInt = 16 * 1024 * 1024
    max_pending: PositiveInt = 1_000_000
    # Bytes of arguments held for unfinished tasks before Overloaded.
    max_pending_bytes: PositiveInt = 1024 * 1024 * 1024
    # Seconds after which SoftTimeout is raised inside the task (it may
    # clean up); 0: none. The hard `timeout` still kills the worker.
    soft_timeout: NonNegFloat = 0.0
    # Finished results remembered per id so a client that resubmits after a
    # reconnect gets the same answer instead of a second run.
    result_cache: NonNegInt = 10_000
    # ... and at most this many bytes of them (values and errors): the
    # oldest go first, so big results cannot pin memory by count alone.
    result_cache_bytes: NonNegInt = 64 * 1024 * 1024
    # Longest task id a client may choose (bytes of UTF-8); ids count
    # towards max_pending_bytes while their task is pending.
    max_id_bytes: PositiveInt = 256
    # Folders put in front of a worker's sys.path before it imports the
    # allowed modules. Relative ones are taken from the config file's
    # folder. Unset: the config file's folder (none without a file).
    path: list[str] | None = None
    # Pickled callables and arguments (the task named supervisor.pool.lane's
    # PICKLE_TASK). Only a private Pool's daemon sets this, in code: a
    # config file may not (parse() refuses the key), so a configured
    # daemon's intake never accepts pickle. docs/POOL.md.
    accept_pickle: bool = False
    # Reply messages queued to one client that stopped reading; past it its
    # replies are dropped and counted, and its next pong says how many
    # (the client then re-attaches its tasks by id).
    max_queued_replies: PositiveInt = 10_000


class RestartSection(_Section, frozen=True):
    # OTP-style intensity: more than max_restarts within period seconds
    # sends the slot to BACKOFF.
    max_restarts: NonNegInt = 20
    period: PositiveFloat = 10.0
    backoff_initial: PositiveFloat = 0.1
    backoff_max: PositiveFloat = 10.0
    backoff_jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.25
    # Consecutive backoffs before the slot is FATAL; it retries after
    # fatal_cooldown seconds (0: stays FATAL until an operator starts it).
    max_backoffs: PositiveInt = 8
    fatal_cooldown: NonNegFloat = 60.0
    # Daemon-wide intensity: more than daemon_max_restarts worker restarts
    # (all slots together) within daemon_period seconds is a crash loop of
    # the whole pool: every restart then waits backoff_max. 0: no limit.
    daemon_max_restarts: NonNegInt = 100
    daemon_period: PositiveFloat = 10.0
    # Seconds a new worker may take to say hello before it is killed.
    start_timeout: PositiveFloat = 30.0


class ShutdownSection(_Section, frozen=True):
    grace: NonNegFloat = 30.0  # drain: wait this long for in-flight tasks
    stop_timeout: PositiveFloat = 5.0  # SIGTERM -> SIGKILL for one worker


class OutputSection(_Section, frozen=True):
    # Worker stdout/stderr and the daemon's own log: the newest ring_bytes
    # of each are kept in memory for `phalanxctl tail`.
    ring_bytes: PositiveInt = 256 * 1024
    # Also append them to files here (worker-N.stdout.log, ...); empty: no
    # files. Rotated at max_bytes, keeping `backups` old files.
    dir: str = ""
    max_bytes: PositiveInt = 10 * 1024 * 1024
    backups: NonNegInt = 5


class ObserveSection(_Section, frozen=True):
    # Off unless set. "HOST:PORT" for the HTTP listener serving /metrics
    # (Prometheus) and the read-only status page; loopback unless you say
    # otherwise (port 0 picks a free port, logged as observe_http_listening).
    http: str = ""
    # Host header values accepted besides the listen address, localhost and
    # 127.0.0.1 (against DNS rebinding), e.g. ["phalanx.example:9466"].
    allowed_hosts: list[str] = []
    # If set, every request must carry "Authorization: Bearer <token>"
    # (RFC 6750 token68 characters, so it also fits in a cookie).
    token: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._~+/=-]*$")] = ""
    # Concurrent HTTP connections (each event stream holds one); more get 503.
    max_clients: Annotated[int, msgspec.Meta(ge=1, le=256)] = 16
    # Unix socket path for the supervisord-compatible XML-RPC listener that
    # the stock supervisorctl drives (created 0600); empty: off.
    xmlrpc: str = ""


class JournalSection(_Section, frozen=True):
    # The write-ahead journal (docs/OPERATIONS.md, "Durability").
    enabled: bool = True
    # Empty: $STATE_DIRECTORY/journal.db (systemd's StateDirectory=), else
    # $XDG_STATE_HOME/phalanx/journal.db, else ~/.local/state/phalanx/journal.db.
    path: str = ""
    # normal: a commit survives phalanxd dying (not a power cut); full: fsync each.
    synchronous: Literal["normal", "full"] = "normal"
    # Finished results stay fetchable by id this long, within this many bytes.
    retention_seconds: NonNegFloat = 3600.0
    retention_bytes: NonNegInt = 256 * 1024 * 1024
    # Hard cap on the journal file (0: none); near it, or with less than
    # min_free_bytes free on its filesystem, new work is refused (JournalFull).
    max_bytes: NonNegInt = 0
    min_free_bytes: NonNegInt = 64 * 1024 * 1024


class Config(_Section, frozen=True):
    daemon: DaemonSection = DaemonSection()
    workers: WorkersSection = WorkersSection()
    endpoints: EndpointsSection = EndpointsSection()
    tasks: TasksSection = TasksSection()
    restart: RestartSection = RestartSection()
    shutdown: ShutdownSection = ShutdownSection()
    output: OutputSection = OutputSection()
    observe: ObserveSection = ObserveSection()
    journal: JournalSection = JournalSection()
    curve: CurveSection = CurveSection()
    source: str = ""  # file it came from; not a TOML key users set

    @property
    def worker_count(self) -> int:
        return self.workers.count or os.cpu_count() or 1

    @property
    def runtime_dir(self) -> Path:
        return resolve_runtime_dir(self.daemon.runtime_dir)

    @property
    def journal_path(self) -> Path:
        return resolve_journal_path(self.journal.path)

    @property
    def local_intake(self) -> str | None:
        """The ipc intake for clients on this host, if any besides ``intake``."""
        if not self.endpoints.local or self.endpoints.intake.startswith("ipc://"):
            return None
        return f"ipc://{self.runtime_dir / LOCAL_INTAKE}"

    @property
    def local_publisher(self) -> str | None:
        if not self.endpoints.local or self.endpoints.publisher.startswith("ipc://"):
            return None
        return f"ipc://{self.runtime_dir / LOCAL_PUBLISHER}"

    @property
    def task_path(self) -> list[str]:
        """``tasks.path`` as absolute folders (see TasksSection.path)."""
        source = Path(self.source) if self.source and not self.source.startswith("<") else None
        base = source.resolve().parent if source is not None else Path.cwd()
        if self.tasks.path is None:
            return [str(base)] if source is not None else []
        return [str(base / entry) for entry in self.tasks.path]

    @property
    def control_endpoint(self) -> str:
        return self.endpoints.control or f"ipc://{self.runtime_dir / 'control.sock'}"


LOCAL_INTAKE, LOCAL_PUBLISHER = "intake.sock", "publisher.sock"


def local_endpoint(name: str) -> str | None:
    """``ipc://`` path of a local daemon's socket ``name`` in the runtime
    directory this user would use by default, if it is there and ours."""
    path = resolve_runtime_dir("") / name
    try:
        if path.is_socket() and os.access(path, os.R_OK | os.W_OK):
            return f"ipc://{path}"
    except OSError:
        pass
    return None


def resolve_runtime_dir(configured: str) -> Path:
    if configured:
        return Path(configured)
    for var in ("PHALANX_RUNTIME_DIR", "RUNTIME_DIRECTORY"):
        if value := os.environ.get(var):
            return Path(value.split(":")[0])
    if xdg := os.environ.get("XDG_RUNTIME_DIR"):
        return Path(xdg) / "phalanx"
    return Path(f"/tmp/phalanx-{os.getuid()}")


def resolve_journal_path(configured: str) -> Path:
    if configured:
        return Path(configured).expanduser()
    if state := os.environ.get("STATE_DIRECTORY"):  # systemd's StateDirectory=
        return Path(state.split(":")[0]) / "journal.db"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "phalanx" / "journal.db"


# inproc:// is not offered: no other process could ever reach it.
_ENDPOINT = re.compile(r"^(tcp://[^\s]+:\d+|ipc://[^\s]+)$")


def _check_endpoints(cfg: Config, where: str) -> None:
    for key in ("intake", "publisher", "control"):
        value = getattr(cfg.endpoints, key)
        if value and not _ENDPOINT.match(value):
            raise ConfigError(
                f"{where}: endpoints.{key}: {value!r} is not a ZeroMQ endpoint "
                "(tcp://HOST:PORT or ipc://PATH)"
            )


_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")
def _check_exposure(cfg: Config, where: str) -> None:
    """Refuse, before anything binds, an endpoint other hosts could reach
    unless CURVE is configured; the control socket never leaves the host."""
    curve = cfg.curve
    if curve.enabled != bool(curve.authorized_keys_dir):
        raise ConfigError(
            f"{where}: curve: set both secret_key_file and authorized_keys_dir, or neither"
        )
    if cfg.endpoints.control and not is_local_endpoint(cfg.endpoints.control):
        raise ConfigError(
            f"{where}: endpoints.control: {cfg.endpoints.control!r} is reachable from other "
            "hosts; the control socket must be ipc:// or loopback (use ssh to reach it)"
        )
    if PICKLE_LANE in cfg.tasks.allow and not cfg.endpoints.intake.startswith("ipc://"):
        raise ConfigError(
            f"{where}: tasks.allow: {PICKLE_LANE} runs pickled calls, so the intake must be "
            f"private (ipc:// in a 0700 directory), not {cfg.endpoints.intake!r}"
        )
    if curve.enabled:
        return
    for key in ("intake", "publisher"):
        value = getattr(cfg.endpoints, key)
        if not is_local_endpoint(value):
            raise ConfigError(
                f"{where}: endpoints.{key}: {value!r} is reachable from other hosts; "
                "configure [curve] secret_key_file and authorized_keys_dir (see "
                "'phalanxctl keygen') or bind a loopback address"
            )


# A module whose task unpickles its argument (workers/pickled.py): only for
# a daemon whose intake no other user can reach.
PICKLE_LANE = "workers.pickled"


def is_local_endpoint(endpoint: str) -> bool:
    """ipc://, or tcp:// on a loopback address (127.0.0.0/8, ::1, localhost).

    Anything else (``*``, 0.0.0.0, an interface or host name) may be reached
    from another host. Decided from the text alone: no name is resolved."""
    if endpoint.startswith("ipc://"):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rpartition(":")[0]
    if ";" in host:  # tcp://source;dest: only the destination is bound
        host = host.rpartition(";")[2]
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _dotted(path: str) -> str:
    # msgspec reports "$.workers.count" or "$.tasks.allow[2]"
    return path.removeprefix("$.").removeprefix("$") or "(top level)"


# msgspec names an unknown key in the message and its table in the path
# (absent at top level); the user wants the key's own dotted name. Lazy match
# so a key that itself contains "` - at `" still parses.
_UNKNOWN = re.compile(r"^Object contains unknown field `(.*?)`(?: - at `\$\.?(.*)`)?$", re.S)


def _describe(text: str) -> str:
    if m := _UNKNOWN.match(text):
        table, key = m[2], m[1]
        if not key.isprintable():  # keep the error on one line
            key = repr(key)
        return f"{table}.{key}: unknown key" if table else f"{key}: unknown key"
    message, _, path = text.rpartition(" - at `")
    if message:
        return f"{_dotted(path.rstrip('`'))}: {message}"
    return text


def parse(data: dict[str, Any], where: str = "<config>") -> Config:
    """Validate an already-parsed TOML mapping."""
    if "source" in data:
        raise ConfigError(f"{where}: source: not a configuration key")
    tasks = data.get("tasks")
    if isinstance(tasks, dict) and "accept_pickle" in tasks:
        raise ConfigError(
            f"{where}: tasks.accept_pickle: not a configuration key; only a private "
            "Pool's own daemon accepts pickle (supervisor.Pool)"
        )
    try:
        cfg = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {_describe(str(exc))}") from None
    cfg = msgspec.structs.replace(cfg, source=where)
    _check_endpoints(cfg, where)
    if cfg.tasks.max_attempts > cfg.tasks.max_attempts_limit:
        raise ConfigError(
            f"{where}: tasks.max_attempts: {cfg.tasks.max_attempts} is over "
            f"tasks.max_attempts_limit ({cfg.tasks.max_attempts_limit})"
        )
    if cfg.observe.http and not _HOSTPORT.match(cfg.observe.http):
        raise ConfigError(f"{where}: observe.http: {cfg.observe.http!r} is not HOST:PORT")
    if (cfg.observe.http or cfg.observe.xmlrpc) and cfg.workers.start_method == "fork":
        # The observers are threads; a child forked while one holds a lock
        # (logging, zmq) can deadlock before it ever runs a task.
        raise ConfigError(f"{where}: observe: needs workers.start_method 'forkserver' or "
                          "'spawn', not 'fork'")
    _check_exposure(cfg, where)
    if cfg.restart.backoff_max < cfg.restart.backoff_initial:
        raise ConfigError(f"{where}: restart.backoff_max: must be >= restart.backoff_initial")
    return cfg


def load(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate a config file; ``None`` gives the built-in defaults."""
    if path is None:
        return parse({}, "<defaults>")
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    return parse(data, where)


def to_dict(cfg: Config) -> dict[str, Any]:
    """The effective configuration as plain data (for `phalanxctl config`)."""
    out: dict[str, Any] = msgspec.to_builtins(cfg)
    out.pop("source", None)
    out["workers"]["count"] = cfg.worker_count
    out["daemon"]["runtime_dir"] = str(cfg.runtime_dir)
    out["endpoints"]["control"] = cfg.control_endpoint
    out["journal"]["path"] = str(cfg.journal_path)
    return out
