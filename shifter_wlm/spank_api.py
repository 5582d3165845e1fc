"""Slurm's SPANK handle, as Python methods.

The cffi library (`_shifter_spank`, built by spank/build.py) exists only inside a Slurm
process, so the hooks receive it through `Spank`; tests pass a fake with the same methods.
"""

from __future__ import annotations

from shifter_site.errors import ShifterError

_ENV_BUF = 1 << 16
_KEEP: list = []  # C strings handed to Slurm (the task's new argv)


class SpankError(ShifterError):
    """A SPANK call failed."""


class SlurmLogStream:
    """A file-like target for structlog that writes each line into Slurm's own log
    (slurmd's log for prolog/epilog and steps; srun -v for the submit side)."""

    def __init__(self, lib, debug: bool = False):
        self._write = lib.shifter_log_debug if debug else lib.shifter_log_info
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            if line:
                self._write(line.encode(errors="replace"))
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._write(self._buffer.encode(errors="replace"))
            self._buffer = ""


class Spank:
    """One hook call's view of Slurm: context, job items, environment, argv, logging."""

    def __init__(self, ffi, lib, sp):
        self._ffi = ffi
        self._lib = lib
        self._sp = ffi.cast("spank_t", sp)
        self.context = {
            lib.S_CTX_LOCAL: "local", lib.S_CTX_REMOTE: "remote", lib.S_CTX_ALLOCATOR: "allocator",
            lib.S_CTX_SLURMD: "slurmd", lib.S_CTX_JOB_SCRIPT: "job_script",
        }.get(lib.spank_context(), "unknown")

    def _check(self, rc: int, what: str) -> None:
        if rc != self._lib.ESPANK_SUCCESS:
            raise SpankError(f"{what}: {self._ffi.string(self._lib.spank_strerror(rc)).decode()}")

    # -- items
    def u32(self, item: str) -> int:
        value = self._ffi.new("uint32_t *")
        self._check(self._lib.shifter_get_u32(self._sp, getattr(self._lib, item), value), item)
        return int(value[0])

    def job_id(self) -> int:
        return self.u32("S_JOB_ID")

    def step_id(self) -> int:
        return self.u32("S_JOB_STEPID")

    def node_id(self) -> int:
        return self.u32("S_JOB_NODEID")

    def uid(self) -> int:
        value = self._ffi.new("uint32_t *")
        self._check(self._lib.shifter_get_uid(self._sp, value), "S_JOB_UID")
        return int(value[0])

    def gid(self) -> int:
        value = self._ffi.new("uint32_t *")
        self._check(self._lib.shifter_get_gid(self._sp, value), "S_JOB_GID")
        return int(value[0])

    def gids(self) -> list[int]:
        gids = self._ffi.new("gid_t **")
        count = self._ffi.new("int *")
        self._check(self._lib.shifter_get_gids(self._sp, gids, count), "S_JOB_SUPPLEMENTARY_GIDS")
        return [int(gids[0][i]) for i in range(count[0])]

    def task_pid(self) -> int:
        value = self._ffi.new("int *")
        self._check(self._lib.shifter_get_pid(self._sp, self._lib.S_TASK_PID, value), "S_TASK_PID")
        return int(value[0])

    def argv(self) -> list[str]:
        argc = self._ffi.new("int *")
        argv = self._ffi.new("char ***")
        self._check(self._lib.shifter_get_argv(self._sp, argc, argv), "S_JOB_ARGV")
        return [self._ffi.string(argv[0][i]).decode(errors="surrogateescape") for i in range(argc[0])]

    def replace_argv(self, words: list[str]) -> None:
        """Make the task exec `words` instead of `shifter ...`: rewrite the `char **` Slurm
        execs, in place (Slurm does not update argc; the array stays NULL-terminated, which
        is what exec uses). It cannot grow: `words` must fit in the original argc."""
        argc = self._ffi.new("int *")
        argv = self._ffi.new("char ***")
        self._check(self._lib.shifter_get_argv(self._sp, argc, argv), "S_JOB_ARGV")
        if len(words) > argc[0]:
            raise SpankError(f"the command ({len(words)} words) is longer than the step's command line "
                             f"({argc[0]}); give it explicitly after shifter's options")
        for i, word in enumerate(words):
            text = self._ffi.new("char[]", word.encode(errors="surrogateescape"))
            _KEEP.append(text)  # must outlive this call: slurmstepd execs it later
            argv[0][i] = text
        for i in range(len(words), argc[0]):
            argv[0][i] = self._ffi.NULL

    def env(self) -> dict[str, str]:
        envp = self._ffi.new("char ***")
        self._check(self._lib.shifter_get_env(self._sp, envp), "S_JOB_ENV")
        out: dict[str, str] = {}
        i = 0
        while envp[0][i] != self._ffi.NULL:
            key, _, value = self._ffi.string(envp[0][i]).decode(errors="surrogateescape").partition("=")
            out[key] = value
            i += 1
        return out

    # -- environment of the job/step
    def getenv(self, name: str) -> str | None:
        buf = self._ffi.new("char[]", _ENV_BUF)
        rc = self._lib.spank_getenv(self._sp, name.encode(), buf, _ENV_BUF)
        if rc != self._lib.ESPANK_SUCCESS:
            return None
        return self._ffi.string(buf).decode(errors="surrogateescape")

    def setenv(self, name: str, value: str) -> None:
        self._check(self._lib.spank_setenv(self._sp, name.encode(), value.encode(errors="surrogateescape"), 1),
                    f"setenv {name}")

    def unsetenv(self, name: str) -> None:
        self._lib.spank_unsetenv(self._sp, name.encode())

    def job_control_setenv(self, name: str, value: str) -> None:
        """Set a variable for the job's prolog/epilog (SPANK_<name> there)."""
        self._check(self._lib.spank_job_control_setenv(self._sp, name.encode(), value.encode(), 1),
                    f"job_control_setenv {name}")

    # -- messages
    def error(self, message: str) -> None:
        self._lib.shifter_log_error(message.encode(errors="replace"))

    def info(self, message: str) -> None:
        self._lib.shifter_log_info(message.encode(errors="replace"))
