"""The job's extern step (remote context, step SLURM_EXTERN_CONT: slurmstepd as root, once
per node, right after the prolog; needs PrologFlags=Contain): it starts the job's sshd.

The sshd is forked from this slurmstepd, so it and every session it serves are processes
of the job's extern step, where pam_slurm_adopt puts ssh sessions: tracked by the step's
proctrack plugin (its cgroup, or its process tree with proctrack/linuxproc), counted by
jobacct_gather in the step's sstat/sacct record (the sshd is also made one of the step's
tasks, as pam_slurm_adopt does: adopt below), listed by `scontrol listpids`, and killed
with the step when the job ends or is cancelled. The prolog (a separate process Slurm
waits for) cannot do that: what it starts belongs to no step.

    prolog (root)        builds the container; writes the plan into the job record
                         (sshd_port, sshd_addrs) and leaves a marker, MARKER_DIR/<job>, so
                         the C shim forwards this step's hooks to Python only for such jobs
    task_post_fork       (extern slurmstepd, root, after its placeholder task is tracked)
                         start_sshd below: the sshd, as the user, in the container; its pid
                         or the reason it could not start goes into the job record
    epilog (root)        removes the marker; the sshd is already gone with the step
"""

from __future__ import annotations

import os

EXTERN_STEP = 0xFFFFFFFC  # Slurm's SLURM_EXTERN_CONT step id
# root-only, node-local; the C shim checks MARKER_DIR/<job> (spank/shim.c SSHD_MARKERS)
MARKER_DIR = "/run/shifter-hpc/sshd"
NOT_STARTED = ("the job's sshd was not started on this node: the job has no extern step there "
               "(the site's slurm.conf needs PrologFlags=Contain)")


def mark(job_id: int) -> None:
    """The prolog's marker that this job's extern step starts an sshd on this host."""
    os.makedirs(MARKER_DIR, 0o700, exist_ok=True)
    st = os.lstat(MARKER_DIR)
    if st.st_uid != 0 or st.st_mode & 0o077:
        raise OSError(f"{MARKER_DIR} must be root's own directory (mode 0700)")
    fd = os.open(os.path.join(MARKER_DIR, str(job_id)), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)


def unmark(job_id: int) -> None:
    try:
        os.unlink(os.path.join(MARKER_DIR, str(job_id)))
    except FileNotFoundError:
        pass


def start_sshd(spank, args, options) -> None:
    """task_post_fork of the extern step: the job's sshd on this node, a child of this
    slurmstepd. Never fails the step: a job whose sshd cannot start still runs, and its
    shifter steps on this node say why (the job record's sshd_error)."""
    from shifter_site import config, logs
    from shifter_wlm import jobs
    from shifter_wlm.procfds import own_step_socket

    log = logs.get("extern")
    job_id = spank.job_id()
    socket = own_step_socket(job_id, EXTERN_STEP)
    if not socket:
        log.error("sshd_failed", job=job_id, error="cannot tell this step's node (no slurmstepd socket found)")
        return
    node = os.path.basename(socket)[: -len(f"_{job_id}.{EXTERN_STEP}")]
    record = None
    try:
        cfg = config.load(args.shifter_config, privileged=True)
        run_dir = jobs.node_dir(cfg.run_dir, node)
        record = jobs.read(run_dir, str(job_id))
        if record is None or record.state != "ready" or not record.sshd_port or record.uid != spank.uid():
            return
        with logs.step(log, "sshd", job=job_id, node=node, port=record.sshd_port) as info:
            pid, listen = _start(cfg, record, run_dir, job_id, node)
            info.update(pid=pid, listen=listen or "*")
        error = ""
        try:
            with logs.step(log, "sshd_adopt", job=job_id, node=node, pid=pid):
                adopt(socket, node, job_id, pid)
        except OSError:  # logged by the step: the sshd runs, tracked as this step's child
            pass
    except Exception as err:  # noqa: BLE001 - logged; the user is told in each shifter step
        from shifter_site.errors import ShifterError

        pid = 0
        error = str(err) if isinstance(err, (ShifterError, OSError)) else f"internal error ({type(err).__name__}: {err})"
        log.error("sshd_failed", job=job_id, node=node, error=error)
        if record is None:
            return
    jobs.write(run_dir, str(job_id), jobs.updated(record, sshd_pid=pid, sshd_error=error))


def adopt(socket: str, node: str, job_id: int, pid: int) -> None:
    """Make `pid` a task of this extern step, as pam_slurm_adopt does for an ssh login
    (stepd_add_extern_pid): the step's proctrack, task and jobacct_gather plugins add it, so
    accounting counts the sshd and its sessions (as a child of slurmstepd it is tracked
    already, but jobacct_gather counts only tasks and their descendants). Called in this
    slurmstepd, through its own libslurmfull; its message thread answers."""
    import ctypes

    class StepId(ctypes.Structure):  # slurm.h slurm_step_id_t
        _fields_ = [("job_id", ctypes.c_uint32), ("step_het_comp", ctypes.c_uint32), ("step_id", ctypes.c_uint32)]

    slurm = ctypes.CDLL(None)  # this process (slurmstepd) and the libraries it was linked with
    connect, add = slurm.stepd_connect, slurm.stepd_add_extern_pid
    connect.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(StepId), ctypes.POINTER(ctypes.c_uint16)]
    add.argtypes = [ctypes.c_int, ctypes.c_uint16, ctypes.c_int]
    step = StepId(job_id, 0xFFFFFFFE, EXTERN_STEP)  # NO_VAL: no heterogeneous component
    version = ctypes.c_uint16(0)
    fd = connect(os.path.dirname(socket).encode(), node.encode(), ctypes.byref(step), ctypes.byref(version))
    if fd < 0:
        raise OSError(f"cannot connect to this step's slurmstepd at {socket}")
    try:
        if add(fd, version.value, pid) != 0:
            raise OSError(f"slurmstepd did not adopt pid {pid} into the extern step")
    finally:
        os.close(fd)


def _start(cfg, record, run_dir: str, job_id: int, node: str) -> tuple[int, str]:
    """Start the sshd (once more when it exited at once and nobody holds its port: a bind
    that lost a race with a socket closing); (pid, listen address)."""
    from runtime.enter import environment
    from runtime.spec import Entering
    from shifter_wlm import sshd, sshplan

    entering = Entering.from_data(record.entering)
    addrs = dict(record.sshd_addrs or {})
    host = sshd.host_seed(cfg.sshd.host_key_secret, job_id, entering.user.uid)
    listen = sshplan.listen_address(node, addrs.get(node, node))
    for attempt in (1, 2):
        try:
            pid = sshd.start(os.path.join(run_dir, record.key, "ns"), entering.user, port=record.sshd_port,
                             listen=listen, host=host,
                             hosts_text=sshplan.known_hosts(addrs, record.sshd_port, host), env=environment(entering, {}))
            return pid, listen
        except sshd.SshdError as err:
            if attempt == 1 and err.exited and not err.held_by:
                continue
            raise
    raise AssertionError("unreachable")
