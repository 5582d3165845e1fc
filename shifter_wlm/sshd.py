"""The per-job sshd inside the container, for non-MPI parallel jobs (docs/architecture.md, decision 10).

    submit (the user)   ~/.udiRoot/id_dropbear (+ .pub): the user's key pair, made if missing
    prolog (root)       on every node: the job's files under /var/run/udiImage/ssh in the
                        container, then dropbear started inside it *as the user* (no
                        capabilities, no_new_privs), on the node's Slurm address and the
                        site's port; its pid goes into the job record
    epilog (root)       stop it (teardown then kills whatever is left in the container)

The prolog takes readiness from the sshd itself (a listening socket its own pid holds), so a
process squatting the port makes the start fail; the reason goes into the job record, and
the job's shifter steps on that node tell the user (shifter_wlm.task).

Files the prolog writes into the container (a root-owned directory on the container's
tmpfs; the user can read, not change, what is the job's):

    /var/run/udiImage/ssh/authorized_keys   root 0644: only the user's job key
    /var/run/udiImage/ssh/host_key          user 0600: the job's host key (dropbear format)
    /var/run/udiImage/ssh/id_key            user 0600: the user's private key, for dbclient
    /var/run/udiImage/ssh/id_ed25519        user 0600: the same key, for OpenSSH's client
    /var/run/udiImage/ssh/port              root 0644: the job's port
    /var/run/udiImage/ssh/client/.ssh/known_hosts   root 0644: every node of the job, as
                                            dbclient (`n2`) and OpenSSH (`[n2]:port`) look it up

and, at build time, /etc/ssh/ssh_config (shifter_wlm/sshplan.py): the image's own OpenSSH client,
and every tool that runs it, reaches the job's sshds with these files.
    /var/run/udiImage/ssh/run/              user 0700: the sshd's pid file and its log
                                            (sshd.log, opened by the sshd as the user)

Host keys are per job and the same on every node of the job: an ed25519 key whose seed is
HMAC-SHA256(site secret, job id, uid). Every prolog derives it alone (no coordination
between nodes), so the clients can check the host key strictly (known_hosts lists each
node) and a process of someone else listening on the port is refused. The secret is a
root-only file present on every node (`sshd.host_key_secret`; munge's key by default).

Name resolution: each node's sshd listens on that node's NodeAddr from Slurm, and the
container's /etc/hosts maps the job's node names to their NodeAddr (only where Slurm's
NodeAddr differs from the name). On a usual cluster (one slurmd per host, NodeAddr = the
node's name) that adds nothing and the sshd listens on every address; on the local test
cluster (three slurmd on 127.0.0.1/.2/.3) it makes `ssh n2` reach n2's sshd.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import signal
import stat
import struct
import time

from shifter_site.errors import ShifterError
from shifter_wlm.ports import listening, port_holders  # noqa: F401  (also sshd.listening)
from shifter_wlm.sshkeys import _string, dropbear_private, openssh_private, public_key, public_line  # noqa: F401  (sshd.* names)

KEY_DIR = ".udiRoot"
KEY_NAME = "id_dropbear"
JOB_DIR = "/var/run/udiImage/ssh"          # in the container
DROPBEAR = "/opt/udiImage/bin/dropbear"    # in the container
UDI_BIN = "/opt/udiImage/bin"
KNOWN_HOSTS = f"{JOB_DIR}/client/.ssh/known_hosts"  # in the container: dbclient finds it as $HOME/.ssh/...
OPENSSH_KEY = f"{JOB_DIR}/id_ed25519"               # in the container: the user's job key for OpenSSH
START_TIMEOUT = 10.0
LOG = "/var/run/udiImage/ssh/run/sshd.log"  # in the container: the sshd's own (the user's) file


class SshdError(ShifterError):
    """The job's sshd cannot be set up; the message says why and what to do. `held_by`: the
    pids that held its port, when that was why."""

    held_by: set[int] = set()
    exited = False  # the sshd started and exited (a bind that failed, ...)


def seed_of(data: bytes, where: str) -> bytes:
    """The seed of a dropbear-format ed25519 private key, checked (its public half must match)."""
    prefix = _string(b"ssh-ed25519") + struct.pack(">I", 64)
    if len(data) != len(prefix) + 64 or not data.startswith(prefix):
        raise SshdError(f"{where} is not an ed25519 key in dropbear's format; remove it (and its .pub) "
                        "and submit again: a new one is made for you")
    seed, pub = data[len(prefix):len(prefix) + 32], data[len(prefix) + 32:]
    if public_key(seed) != pub:
        raise SshdError(f"{where} is damaged (its public half does not match); remove it and submit again")
    return seed


# ---------------------------------------------------------------- submit side (the user)


def enabled(args, cfg) -> bool:
    """plugstack.conf's enable_sshd=0|1 when given, else the site config's sshd.enabled."""
    return cfg.sshd.enabled if args.enable_sshd is None else args.enable_sshd


def ensure_user_key(home: str) -> str | None:
    """Make ~/.udiRoot/id_dropbear (0600) and its .pub if missing, as the calling user.
    Returns the private key's path when it made one, None when it already existed."""
    directory = os.path.join(home, KEY_DIR)
    path = os.path.join(directory, KEY_NAME)
    if os.path.lexists(path):
        return None
    try:
        os.makedirs(directory, 0o700, exist_ok=True)
        seed = os.urandom(32)
        tmp = f"{path}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(dropbear_private(seed))
        try:
            os.link(tmp, path)  # never replaces a key made meanwhile by another submission
        except FileExistsError:
            return None
        finally:
            os.unlink(tmp)
        pub = f"{path}.pub.{os.getpid()}.tmp"
        with open(pub, "w") as handle:
            handle.write(public_line(seed, "shifter job key") + "\n")
        os.replace(pub, f"{path}.pub")
    except OSError as err:
        raise SshdError(f"cannot create your key pair for the job's sshd in {directory} "
                        f"({err.strerror}); make it writable by you, or ask the admins") from None
    return path


# ---------------------------------------------------------------- prolog side (root)


def read_user_key(user) -> bytes:
    """The seed of the user's ~/.udiRoot/id_dropbear, read with the user's rights; it must
    be the user's own file, not readable by others."""
    path = os.path.join(user.home, KEY_DIR, KEY_NAME)
    os.setegid(user.gid)
    os.seteuid(user.uid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            data = handle.read(4096)
    except OSError as err:
        raise SshdError(f"cannot read your job key {path} ({err.strerror}); it is made when you submit a "
                        "job with --image: submit again") from None
    finally:
        os.seteuid(0)
        os.setegid(0)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != user.uid or st.st_mode & 0o077:
        raise SshdError(f"{path} must be your own file with mode 0600 (chmod 600 {path})")
    return seed_of(data, path)


def host_seed(secret_path: str, job_id: int, uid: int) -> bytes:
    """The job's host key seed: the same on every node of the job, unknown to anyone without
    the site secret (a root-only file, identical on every node)."""
    try:
        fd = os.open(secret_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            secret = handle.read(1 << 16)
    except OSError as err:
        raise SshdError(f"sshd.host_key_secret {secret_path}: {err.strerror}; the site must provide it "
                        "on every node") from None
    if st.st_mode & 0o077 or len(secret) < 16:
        raise SshdError(f"sshd.host_key_secret {secret_path} must be readable by its owner only and hold "
                        "at least 16 bytes")
    return hmac.new(secret, f"shifter-sshd-host-key\0{job_id}\0{uid}".encode(), hashlib.sha256).digest()


def _write(path: str, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def _job_files(user, port: int, host: bytes, user_seed: bytes, hosts_text: str) -> None:
    """In the container (this process has joined it, as root): the job's files. (Every
    module it uses is imported before the join: the host's Python is out of sight there.)"""
    if os.path.lexists(JOB_DIR):  # a container reused by a prolog run again: start afresh
        shutil.rmtree(JOB_DIR)
    os.makedirs(JOB_DIR, 0o755, exist_ok=True)
    for directory in ("/var/run/udiImage", JOB_DIR, f"{JOB_DIR}/client", f"{JOB_DIR}/client/.ssh"):
        os.makedirs(directory, 0o755, exist_ok=True)
        os.chown(directory, 0, 0)
        os.chmod(directory, 0o755)
    os.mkdir(f"{JOB_DIR}/run", 0o700)  # the sshd's own (pid file)
    os.chown(f"{JOB_DIR}/run", user.uid, user.gid)
    _write(f"{JOB_DIR}/authorized_keys", (public_line(user_seed, "shifter job key") + "\n").encode(), 0o644)
    _write(f"{JOB_DIR}/port", f"{port}\n".encode(), 0o644)
    _write(KNOWN_HOSTS, hosts_text.encode(), 0o644)
    _write(f"{JOB_DIR}/host_key", dropbear_private(host), 0o600, user.uid, user.gid)
    _write(f"{JOB_DIR}/id_key", dropbear_private(user_seed), 0o600, user.uid, user.gid)
    _write(OPENSSH_KEY, openssh_private(user_seed, "shifter job key").encode(), 0o600, user.uid, user.gid)


def _no_imports_from_the_container() -> None:
    """A child about to join the container, as root, imports nothing from then on: Python
    would look for a module not yet imported in the container's (the image's) /usr/lib, and
    run the image's code as root. A missing import fails instead (ModuleNotFoundError)."""
    import sys

    sys.path.clear()
    sys.path_importer_cache.clear()


def _reset_signals() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    for signum in range(1, signal.NSIG):
        if signum in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(signum, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass


def start(ns_path: str, user, *, port: int, listen: str, host: bytes, hosts_text: str,
          env: dict[str, str]) -> int:
    """Start the job's sshd inside the pinned container at ns_path, as the user, with `env`
    (the container's environment); returns its pid once *it* listens on the port (a socket
    of its own, not whoever holds the port). Root only (the job's extern step: its
    slurmstepd is the sshd's parent, so the sshd belongs to that step).

    The user's key is read by the sshd-to-be, a single-threaded child, with the user's
    rights: changing ids in slurmstepd itself would change them for all its threads.

    The sshd holds nothing root opened: before it becomes the user every fd but an error
    pipe is closed, and its stdin and log (LOG, in its own run directory in the container)
    are opened as the user."""
    import fcntl

    from runtime import enter as renter
    from runtime import syscalls as sc

    # no password or PAM code is compiled in (udiImage/localoptions.h); -w: no root login;
    # -e: sessions get the container's environment (dropbear then sets USER, HOME, SHELL,
    # and PATH to its compiled-in default, which ends with /opt/udiImage/bin)
    argv = [DROPBEAR, "-F", "-E", "-w", "-e", "-r", f"{JOB_DIR}/host_key",
            "-P", f"{JOB_DIR}/run/sshd.pid", "-p", f"[{listen}]:{port}" if ":" in listen else f"{listen}:{port}".lstrip(":")]
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the sshd-to-be: never returns
        try:
            # slurmstepd may have started us with 0-2 closed: move ours out of the way first
            err_w = fcntl.fcntl(err_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.setsid()
            _reset_signals()
            user_seed = read_user_key(user)
            _no_imports_from_the_container()
            renter.join(ns_path)
            os.chdir("/")
            _job_files(user, port, host, user_seed, hosts_text)
            sc.set_dumpable(0)
            os.closerange(0, err_w)  # slurmd's log, the prolog's files: none goes past here
            os.closerange(err_w + 1, 1 << 16)
            renter.drop_privileges(user)
            sc.set_dumpable(0)
            # what a session leaves running (nohup, a daemon) stays below the sshd, in the
            # extern step's process tree, instead of escaping to init
            sc.child_subreaper()
            null = os.open("/dev/null", os.O_RDONLY)  # as the user from here on
            log = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            for fd in {null, log} - {0, 1, 2}:
                os.close(fd)
            for fd in (0, 1, 2):  # os.open's fds are close-on-exec, and dup2(fd, fd) keeps that
                os.set_inheritable(fd, True)
            os.execve(DROPBEAR, argv, env)
        except BaseException as err:  # noqa: BLE001 - reported to the parent, then gone
            try:
                os.write(err_w, (str(err) or type(err).__name__).encode(errors="replace")[:1000])
            finally:
                os._exit(127)
    os.close(err_w)
    try:
        failure = os.read(err_r, 1000).decode(errors="replace")  # EOF once exec succeeded
    finally:
        os.close(err_r)
    if failure:
        os.waitpid(pid, 0)
        raise SshdError(f"cannot start the job's sshd: {failure}")
    where = f"{listen or '*'}:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            err = SshdError(f"the job's sshd could not start on {where} ({_status(status)}): {log_tail(ns_path)}")
            err.held_by, err.exited = port_holders(listen, port), True
            raise err
        if listening(pid, listen, port):
            return pid
        if time.monotonic() > deadline:
            stop(pid, ns_path)
            raise SshdError(f"the job's sshd did not listen on {where} within {START_TIMEOUT:.0f} s: "
                            f"{log_tail(ns_path)}")
        time.sleep(0.02)


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit {os.WEXITSTATUS(status)}"


def log_tail(ns_path: str) -> str:
    """The last line of the sshd's log (the user's own file in the container), read by a
    child that joins the container; bounded, never following a link."""
    from runtime import enter as renter

    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            _no_imports_from_the_container()
            renter.join(ns_path)
            fd = os.open(LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode):
                os.write(w, os.pread(fd, 2000, max(0, st.st_size - 2000)))
        finally:
            os._exit(0)
    os.close(w)
    try:
        data = b""
        while len(data) < 4000 and (chunk := os.read(r, 4000)):
            data += chunk
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def stop(pid: int, ns_path: str, timeout: float = 5.0) -> bool:
    """Stop the job's sshd: SIGTERM, then SIGKILL; only if pid still is a process inside the
    container at ns_path (a pid reused by something else is left alone; so is every pid when
    ns_path is no pin any more, e.g. after a reboot, as its inode is then a plain file's).
    True if stopped."""
    try:
        pin = os.stat(ns_path)
        if pin.st_dev == os.stat(os.path.dirname(ns_path)).st_dev:
            return False
        want = pin.st_ino
        if os.readlink(f"/proc/{pid}/ns/mnt") != f"mnt:[{want}]":
            return False
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # our child when the prolog stops it itself
            if done:
                return True
        except ChildProcessError:
            pass
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return True
