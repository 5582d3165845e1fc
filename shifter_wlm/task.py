"""Steps (remote context, slurmstepd as root) whose command is `shifter ...`.

    init_post_opt (slurmstepd, root, once per node)   decide which container: the job's (built by the
        prolog) or, for `srun --image=OTHER shifter` / `srun shifter -i OTHER` / other
        volumes, a step-level one built now; everything the tasks need is prepared here
    task_init_privileged (each task, root)  join the container's namespace, set the task's
        environment, rewrite argv to the user's command, no_new_privs, empty bounding set;
        slurmstepd then drops to the user and execs it: the task keeps Slurm's pid,
        signals, cgroup and accounting
    exit (slurmstepd)                       tear down a step-level container

The tasks are forked from slurmstepd afterwards, so they inherit `_prepared`. (user_init
would be too late: slurmstepd has already switched to the user's uid there.)
"""

from __future__ import annotations

import os
import time

from shifter_site.errors import ShifterError, StepError
from shifter_wlm.procfds import own_step_socket

# No dataclasses on this path: a `srun shifter` step pays for every import (bench/bench_srun.py;
# docs/architecture.md, decision 13). What entering needs comes from the job record.

BATCH_STEP = 0xFFFFFFFB  # Slurm's SLURM_BATCH_SCRIPT step id


class Prepared:
    """What slurmstepd prepared for its tasks (they inherit it when forked)."""

    __slots__ = ("ns_path", "spec", "command", "env_file", "run_dir", "step_record", "key", "ccm_script", "notes")

    def __init__(self, ns_path: str, spec, command: list[str], env_file: str | None, run_dir: str,
                 step_record: str | None, key: str, ccm_script: str | None = None, notes: str = ""):
        self.ns_path = ns_path          # the container's pinned namespace
        self.spec = spec                # runtime.spec.Entering, with this step's options (see _entering)
        self.command = command          # the user's command after shifter's options
        self.env_file = env_file        # --env-file, read in the task with the user's rights
        self.run_dir = run_dir
        self.step_record = step_record  # "<job>.<step>" when this step built its own container
        self.key = key
        self.ccm_script = ccm_script    # --ccm: the batch script (host path), run in the container
        self.notes = notes              # shifter -v: what this step chose, for each task's stderr


_prepared: Prepared | None = None
_sshd_notice = ""  # why the job's sshd on this node could not start (from the job record)


def is_shifter(argv: list[str]) -> bool:
    return bool(argv) and os.path.basename(argv[0]) == "shifter"


def node_from_step_socket(job_id: int, step_id: int) -> str | None:
    """This slurmstepd's node name, from the socket it listens on in its slurmd's spool
    directory (`<node>_<job>.<step>`): created by slurmstepd as root, so not the user's say.
    (At this point the step's environment still carries the submitting node's
    SLURMD_NODENAME; several slurmd on one host share the host name.)"""
    path = own_step_socket(job_id, step_id)
    return os.path.basename(path)[: -len(f"_{job_id}.{step_id}")] if path else None


def _node(job_id: int, step_id: int) -> str:
    node = node_from_step_socket(job_id, step_id)
    if not node:
        raise StepError("cannot tell which node this step runs on (no slurmstepd socket found)")
    return node


def _parse(argv: list[str]) -> dict:
    from runtime.cli import UsageError, parse_args

    try:
        opts = parse_args(argv[1:])
    except UsageError as err:
        raise StepError(str(err)) from None
    if opts["help"]:
        raise StepError("shifter --help: run it outside srun to read the usage")
    return opts


def _entering(record, opts):
    """The entering spec the job record embeds (runtime.spec.Entering), with this step's
    shifter options."""
    from runtime.frozen import replace
    from runtime.spec import Entering

    try:
        entering = Entering.from_data(record.entering)
    except (KeyError, TypeError, ValueError):
        raise StepError(f"the record of job {record.job_id} on this node has no usable container "
                        "description; resubmit the job") from None
    return replace(entering, env=tuple(opts["env"]), env_file=(), clearenv=opts["clearenv"],
                   workdir=opts["workdir"], entrypoint=opts["entrypoint"])


class Refused:
    """A step that cannot run, with the reason: reported by each task (see step_setup)."""

    __slots__ = ("message",)

    def __init__(self, message: str):
        self.message = message


# Where a step's time goes (bench/bench_srun.py): (phase, perf_counter) marks along the step path, shown
# with -v (`srun shifter -v ...`, one line per task) as the prolog's events show the job's.
_marks: list[tuple[str, float]] = []


def _mark(phase: str) -> None:
    _marks.append((phase, time.perf_counter()))


def phase_times() -> str:
    """`phase 0.12 ms, ...`: each mark's time since the one before it."""
    return ", ".join(f"{name} {(t - _marks[i][1]) * 1000:.2f}" for i, (name, t) in enumerate(_marks[1:]))


def step_setup(spank, args, options) -> None:
    """init_post_opt: choose and, when needed, build this step's container.

    A problem is not raised here: Slurm would report only "Plugin initialization failed" to
    the user and srun would still exit 0. Each task reports it instead (enter)."""
    global _prepared
    from shifter_wlm.dispatch import python_started  # imported already: it routed this hook

    _marks.clear()
    t0 = python_started()
    if t0 is not None:  # "python": starting the interpreter and importing up to this hook
        _marks.append(("python_start", t0))
    _mark("python" if t0 is not None else "start")
    argv = spank.argv()
    # --ccm: the batch step's script itself runs in the job's container (first node)
    ccm = bool(options.ccm) and spank.step_id() == BATCH_STEP
    if not is_shifter(argv) and not ccm:
        return
    try:
        _prepare(spank, args, options, argv, ccm)
    except ShifterError as err:
        _prepared = Refused(str(err))
    except Exception as err:  # noqa: BLE001 - one line for the user, never a bare hook failure
        _prepared = Refused(str(err) if isinstance(err, OSError) else f"internal error ({type(err).__name__}: {err})")


def _prepare(spank, args, options, argv: list[str], ccm: bool) -> None:
    global _prepared
    from runtime.enter import check_env_entry
    from shifter_site import configcache
    from shifter_wlm import jobs

    _mark("imports")
    opts = _parse(["shifter", "--", *argv] if ccm else argv)
    for entry in opts["env"]:
        check_env_entry(entry, "--env")
    _mark("options")
    # root's validated snapshot of the site config when current (skips YAML: the common
    # case, a step joining the job's container, must stay cheap); else the full load
    snapshot = configcache.load(args.shifter_config)
    cfg = None if snapshot is not None else _config(args)
    _mark("config")
    job_id, step_id, uid = spank.job_id(), spank.step_id(), spank.uid()
    node = _node(job_id, step_id)
    _mark("node")
    run_dir = jobs.node_dir((snapshot or cfg).run_dir, node)
    job = jobs.read(run_dir, str(job_id))
    _mark("job_record")

    if job is not None and job.uid != uid:
        raise StepError(f"the container record of job {job_id} belongs to another user; refusing it")
    image, request = _choose_image(spank, args, options, opts, job, cfg)
    volume = _choose_volume(spank, options, opts, job)
    module = _choose_module(spank, options, opts, job)
    _mark("choose")

    gpus = _step_gpus(spank, snapshot, cfg, job)
    started = time.perf_counter()
    same_as_job = job is not None and job.image_id == image and job.volume == volume and job.module == module
    if same_as_job and job.state == "failed":
        raise StepError(job.message)
    same_as_job = same_as_job and (gpus is None or tuple(job.gpus) == gpus)
    if same_as_job and job.state == "ready":
        key, step_record = job.key, None
        spec = _entering(job, opts)
        global _sshd_notice
        _sshd_notice = job.sshd_error
    elif ccm:
        raise StepError("--ccm: the job's container was not built on this node; see the prolog's "
                        "events in slurmd's log")
    else:
        from shifter_wlm import stepbuild

        key, record, step_record = stepbuild.build(cfg or _config(args), run_dir, job_id, step_id, uid, image,
                                                   request, volume, module, node, gpus)
        spec = _entering(record, opts)
    notes = ""
    if opts["verbose"]:
        how = ("the job's container" if step_record is None else
               f"a container of its own, built in {(time.perf_counter() - started) * 1000:.0f} ms")
        notes = (f"shifter: step {job_id}.{step_id} on {node}: {how} (key {key}); image {image} ({request}); "
                 f"volumes: {volume or 'none'}; modules: {module or 'the site default'}\n")
    _prepared = Prepared(ns_path=os.path.join(run_dir, key, "ns"), spec=spec, command=list(opts["command"]),
                         env_file=opts["env_file"], run_dir=run_dir, step_record=step_record, key=key,
                         ccm_script=argv[0] if ccm else None, notes=notes)
    _mark("container")
    # refuse a bad --entrypoint before any task starts
    from runtime.enter import command, environment
    command(spec, opts["command"], environment(spec, {}))
    _mark("command")


def _check_image_id(image: str, where: str) -> str:
    from shifter_site.imageid import is_id

    if not is_id(image):
        raise StepError(f"{where}={image!r} is not an image id (64 hex digits); resubmit with --image=REF")
    return image


def _choose_image(spank, args, options, opts: dict, job, cfg) -> tuple[str, str]:
    """(image id, request) of this step, whatever the user's environment export says:
    `shifter -i REF`; else a step's own --image (srun's option, handed to this context by
    Slurm; resolved by srun when its environment reached the step, else here); else the
    job's, from the record its prolog wrote on this node; else SHIFTER_IMAGE."""
    if opts["image"] is not None:
        from runtime.cli import resolve_image
        return resolve_image(cfg or _config(args), opts["image"]), opts["image"]
    if options.image is not None and (job is None or options.image != job.image_request):
        if spank.getenv("SHIFTER_IMAGEREQUEST") == options.image and spank.getenv("SHIFTER_IMAGE"):
            return _check_image_id(spank.getenv("SHIFTER_IMAGE"), "SHIFTER_IMAGE"), options.image
        from runtime.cli import resolve_image
        return resolve_image(cfg or _config(args), options.image), options.image
    if job is not None:
        return job.image_id, job.image_request
    image = spank.getenv("SHIFTER_IMAGE") or ""
    if not image:
        raise StepError("no image for this step: submit the job with --image=REF, or run srun --image=REF "
                        "shifter ..., or shifter --image=REF ...")
    return _check_image_id(image, "SHIFTER_IMAGE"), spank.getenv("SHIFTER_IMAGEREQUEST") or f"id:{image}"


def _choose_volume(spank, options, opts: dict, job) -> str:
    """Volumes accumulate (runtime.volumes.combine): the job's, the step's srun --volume
    (Slurm hands this context only the last one; srun exported them all when it could),
    then each shifter -V."""
    job_volume = job.volume if job is not None else ""
    texts = [job_volume, spank.getenv("SHIFTER_VOLUME") or "", options.volume or "", *opts["volume"]]
    if all(not text or text == job_volume for text in texts):
        return job_volume  # the common case: no import
    from runtime.volumes import combine

    return combine(*texts)


def _choose_module(spank, options, opts: dict, job) -> str:
    """`shifter -m`, else the step's --module, else the job's."""
    if opts["module"] is not None:
        return opts["module"]
    if options.module is not None:
        return options.module
    if job is not None:
        return job.module
    return spank.getenv("SHIFTER_MODULE") or ""


def _config(args):
    from shifter_site import config

    return config.load(args.shifter_config, privileged=True)


def _step_gpus(spank, snapshot, cfg, job) -> tuple[int, ...] | None:
    """This step's GPUs on this node, for the site's GPU module (None: the site has none).
    With the job's container on the node: Slurm's SLURM_STEP_GPUS (a step asking for fewer
    GPUs than the job's), which must be among the job's (the prolog's, from slurmd), else the
    job's; without: what the step's environment says (runtime.gpu.allocated)."""
    if (snapshot if snapshot is not None else cfg).gpu_module is None:
        return None
    from runtime import gpu

    if job is not None and job.state == "ready":
        said = gpu.allocated({"SLURM_STEP_GPUS": spank.getenv("SLURM_STEP_GPUS")}
                             if spank.getenv("SLURM_STEP_GPUS") is not None else {})
        if said is None:
            return tuple(job.gpus)
        if not set(said) <= set(job.gpus):
            raise StepError(f"SLURM_STEP_GPUS={spank.getenv('SLURM_STEP_GPUS')} names GPUs job {job.job_id} "
                            f"does not have on this node ({','.join(map(str, job.gpus)) or 'none'}); unset it")
        return said
    env = {name: spank.getenv(name) for name in gpu.SOURCES if spank.getenv(name) is not None}
    return gpu.allocated(env) or ()


def _read_env_file(path: str, uid: int, gid: int) -> tuple[str, ...]:
    """--env-file, read with the user's rights (this task process is single-threaded)."""
    from runtime.enter import parse_env_file

    os.setegid(gid)
    os.seteuid(uid)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as err:
        raise StepError(f"--env-file {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    finally:
        os.seteuid(0)
        os.setegid(0)
    return parse_env_file(text, path)


def enter(spank, args, options) -> None:
    """task_init_privileged: put this task into the container, as its own process."""
    prepared = _prepared
    if prepared is None:
        return
    if isinstance(prepared, Refused):
        # in the task, Slurm's error line reaches the user's srun, and the task fails
        raise StepError(prepared.message)
    if _sshd_notice and spank.getenv("SLURM_LOCALID") == "0":  # once per node and step
        spank.error(f"shifter: warning: {_sshd_notice}; ssh to this node will not reach the job")
    _mark("task")  # slurmstepd's work between the hooks (forking the task) lies before this
    from runtime import enter as renter
    from runtime import syscalls
    from runtime.frozen import replace

    spec = prepared.spec
    if prepared.env_file is not None:  # read here, in the task, with the user's rights
        spec = replace(spec, env_file=_read_env_file(prepared.env_file, spec.user.uid, spec.user.gid))
    task_env = spank.env()
    env = renter.environment(spec, task_env)
    command = renter.command(spec, prepared.command, env)
    grows = len(command) > len(spank.argv())  # Slurm's argv cannot grow: see below
    if prepared.ccm_script or grows:
        from shifter_wlm import stepscripts  # before entering (the host's modules); not for a plain step
    script = stepscripts.read_script(prepared.ccm_script) if prepared.ccm_script else None
    _mark("environment")
    renter.join(prepared.ns_path)
    _mark("join")
    if script is not None:
        command[0] = stepscripts.place_script(script, spec.user.uid, spec.user.gid)
    # the working directory: slurmstepd itself changes to the step's cwd after this hook
    # (as the user, now in the container); --workdir is applied in task_init, after that
    global _hook_env, _command
    _hook_env = env  # for the module user hooks, run by user_hooks() once the task is the user
    _command = command  # checked there too, as the user
    for name in task_env.keys() - env.keys():
        spank.unsetenv(name)
    for name, value in env.items():
        if task_env.get(name) != value:
            spank.setenv(name, value)
    if grows:
        # Slurm's argv cannot grow (e.g. --entrypoint adds the image's words): the task
        # runs a script that execs the command instead
        command = ["/bin/sh", stepscripts.place_exec_script(command, spec.user.uid, spec.user.gid)]
    spank.replace_argv(command)
    syscalls.drop_bounding_set()
    syscalls.no_new_privs()
    _mark("task_env")


_hook_env: dict | None = None
_command: list[str] | None = None
def user_hooks(spank, args, options) -> None:
    """task_init (the task, already the user, its stdout and stderr now the user's): the
    -v notes; --workdir (slurmstepd has changed to the step's cwd since task_init_privileged);
    the command checked as the shells do (127 not found, naming the PATH searched;
    126 not executable), before each module's user hook, in the container; a failing hook
    fails the task."""
    prepared = _prepared
    if not isinstance(prepared, Prepared) or _hook_env is None:
        return
    from runtime import enter as renter

    if prepared.notes:
        os.write(2, (prepared.notes + f"shifter: step path (ms): {phase_times()}\n").encode(errors="replace"))
    spec = prepared.spec
    try:
        if spec.workdir is not None:
            renter.enter_workdir(spec)
        renter.find_command(_command[0], _hook_env)
    except renter.EnterError as err:
        os.write(2, f"shifter: {err}\n".encode(errors="replace"))
        os._exit(err.exit_code)  # the task's exit code, as a shell's (and `shifter` outside Slurm)
    for module, hook in prepared.spec.user_hooks:
        renter.run_user_hook(module, hook, _hook_env)


def step_exit(spank, args, options) -> None:
    """exit (slurmstepd): a step-level container goes with its step."""
    prepared = _prepared
    if not isinstance(prepared, Prepared) or prepared.step_record is None:
        return
    from runtime import teardown
    from shifter_wlm import jobs

    teardown.teardown(prepared.run_dir, prepared.key)
    jobs.remove(prepared.run_dir, prepared.step_record)
