"""The nbjobs zygote: a process that has imported ipykernel and forks one fresh kernel per job.

Run with the kernelspec's own Python: `python zygote_server.py [MODULE ...]` (modules to
preload, e.g. numpy pandas). It imports only the standard library and ipykernel, so nbjobs
need not be installed in the kernel's environment.

Before it forks, this process holds no ZMQ context and no thread of its own: a child starts
from a clean, single-threaded copy and builds its kernel (sockets, threads) itself.

Protocol: JSON lines; requests on stdin, replies and events on stdout.
  -> {"op": "fork", "id": 7, "argv": [...], "connection_file": PATH, "kernel_log": PATH,
      "setup": {"cwd": ..., "env": {...}, "cpus": [...], "cgroup": DIR | null,
                "address_space": BYTES | null} | null}
  <- {"id": 7, "pid": 4242}                       or {"id": 7, "error": "..."}
  <- {"event": "exit", "pid": 4242, "status": 3}  a child ended; status < 0: killed by signal -status
  <- {"event": "hello", "pid": ..., "preloaded": [...], "failed": {...}, "threads": N}  once, first
A fork with "setup": null is a spare kernel, started in the zygote's own environment; the
provider later hands it to a job by running `__import__("_nbjobs_zygote").assign(JSON)` in it
(silently), which applies the same setup to the running kernel. The provider writes the
connection file (fresh key, IPC transport) before asking for the fork.
When stdin closes (the provider ended or died), every child's process group is killed and
the zygote exits.
"""

import sys

# Run as a script, sys.path[0] is this file's folder (nbjobs/kernels): never import from it.
del sys.path[0]

import atexit  # noqa: E402 - the sys.path fix above must come first
import contextlib  # noqa: E402
import gc  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402

MODULE_NAME = "_nbjobs_zygote"  # how a forked kernel finds this module for `assign`
STARTUP_PYTHONPATH = os.environ.get("PYTHONPATH", "")
# Imported ahead so a forked kernel does not pay for them; all are imported by any kernel anyway.
KERNEL_MODULES = (
    "ipykernel.kernelapp",
    "ipykernel.ipkernel",
    "ipykernel.zmqshell",
    "ipykernel.iostream",
    "ipykernel.comm",
    "ipykernel.debugger",  # debugpy: a third of a kernel's initialize() when imported there
    "IPython.core.completer",
    "IPython.core.history",
    "sqlite3",
    "pdb",
    "tornado.locks",
    "tornado.queues",
)


# --- what a child does to become one job's kernel ---------------------------------------


def set_environment(env: dict[str, str]) -> None:
    """Make os.environ exactly `env` (the job's full environment)."""
    old_tz = os.environ.get("TZ")
    for key in [k for k in os.environ if k not in env]:
        del os.environ[key]
    for key, value in env.items():
        if os.environ.get(key) != value:
            os.environ[key] = value
    if os.environ.get("TZ") != old_tz:
        time.tzset()


def switch_pythonpath(new: str) -> None:
    """sys.path was built from the zygote's PYTHONPATH at start-up: put the job's entries in their place."""
    if new == STARTUP_PYTHONPATH:
        return
    old_entries = {os.path.abspath(p) for p in STARTUP_PYTHONPATH.split(os.pathsep) if p}
    kept = [p for p in sys.path if p == "" or os.path.abspath(p) not in old_entries]
    head = 1 if kept and kept[0] == "" else 0  # the kernel's '' (its cwd) stays first
    entries = [os.path.abspath(p) for p in new.split(os.pathsep) if p]
    sys.path[:] = kept[:head] + entries + kept[head:]
    importlib.invalidate_caches()


def pin_cpus(cpus: list[int], *, all_threads: bool) -> None:
    """CPU affinity; a running kernel already has threads, and affinity is per thread on Linux."""
    if not all_threads:
        os.sched_setaffinity(0, cpus)
        return
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), cpus)


def join_cgroup(path: str) -> None:
    """Best effort, as nbjobs.resources.enforce does: the parent checks membership afterwards.

    Writing "0" moves the whole calling process, every thread of a running kernel included.
    """
    with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.procs"), "w") as procs:
        procs.write("0")


def limit_address_space(nbytes: int) -> None:
    """The RLIMIT_AS backstop nbjobs.resources.enforce computed; never raises the hard limit."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard == resource.RLIM_INFINITY or nbytes < hard:
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, hard))


def apply_setup(setup: dict, *, started: bool) -> None:
    """The job's environment, sys.path, cwd, cgroup, CPUs and limits; `started`: in a running kernel.

    The same steps as nbjobs.resources.enforce.apply_in_child, which this process cannot import.
    """
    env = dict(setup["env"])
    env["JPY_PARENT_PID"] = str(os.getppid())  # as a plain kernel sees it: its parent's pid
    set_environment(env)
    switch_pythonpath(env.get("PYTHONPATH", ""))
    os.chdir(setup["cwd"])
    if setup.get("cgroup"):
        join_cgroup(setup["cgroup"])
    if setup.get("cpus"):
        pin_cpus(setup["cpus"], all_threads=started)
    if setup.get("address_space") is not None:
        limit_address_space(setup["address_space"])


def assign(setup_json: str) -> None:
    """Hand a spare (already running) kernel to a job; run in the kernel, before any cell."""
    apply_setup(json.loads(setup_json), started=True)


def die_with_parent(parent: int) -> None:
    """SIGKILL when the zygote dies (Linux); ipykernel's parent poller is the slower fallback."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the zygote died before the line above took effect
        os._exit(1)


def reseed_random() -> None:
    """Children of one zygote share its random state: give preloaded generators fresh seeds."""
    # CPython's `random` reseeds itself after fork; numpy's global generator does not.
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def redirect_output(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def become_kernel(request: dict, zygote: int, inherited_fds: list[int]) -> None:
    """In the forked child: set up, run the kernel, exit. Never returns to the zygote's loop."""
    code = 1
    try:
        os.setsid()  # own process group: the provider kills the kernel and what it started at once
        signal.set_wakeup_fd(-1)
        for fd in inherited_fds:
            os.close(fd)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # interrupt = KeyboardInterrupt
        die_with_parent(zygote)
        redirect_output(request["kernel_log"])
        reseed_random()
        if request.get("setup"):
            apply_setup(request["setup"], started=False)
        else:
            os.environ["JPY_PARENT_PID"] = str(zygote)
        from ipykernel.kernelapp import IPKernelApp

        argv = list(request["argv"])
        sys.argv = [sys.modules["ipykernel"].__file__, *argv]
        app = IPKernelApp.instance()
        # parent_handle's default was read from the environment when ipykernel was imported here.
        app.initialize([*argv, f"--IPKernelApp.parent_handle={zygote}"])
        app.start()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        # Like a normal interpreter exit (history saved, atexit hooks) but never unwinding
        # into the zygote's frames, whose cleanup would act on the zygote's other children.
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# --- the zygote itself ---------------------------------------------------------------------


def preload(modules: list[str]) -> tuple[list[str], dict[str, str]]:
    loaded: list[str] = []
    failed: dict[str, str] = {}
    for name in [*KERNEL_MODULES, *modules]:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # a missing optional module must not stop the zygote
            failed[name] = f"{type(exc).__name__}: {exc}"
    return loaded, failed


def warm_up() -> None:
    """Fill per-process caches that every kernel would otherwise fill again after its fork."""
    try:  # IPython's input transformation compiles the tokenizer's regexes on first use
        from IPython.core.inputtransformer2 import TransformerManager

        TransformerManager().transform_cell("x = 1 + 1\n")
    except Exception:  # only an optimisation
        pass


def thread_count() -> int:
    """Native threads too (a preloaded library may start its own); 0 where /proc is missing."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 0


class Zygote:
    def __init__(self, requests: int, replies: int) -> None:
        self.requests = requests
        self.replies = replies
        self.children: set[int] = set()
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd tells the loop to reap
        signal.signal(signal.SIGTERM, lambda *_: None)  # handled in the loop: stop like at EOF
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the job's runner, not us
        self.stopping = False

    def send(self, message: dict) -> None:
        data = (json.dumps(message) + "\n").encode()
        while data:
            data = data[os.write(self.replies, data) :]

    def fork(self, request: dict) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            become_kernel(request, os.getppid(), [self.requests, self.replies, self.wake_read, self.wake_write])
        self.children.add(pid)
        self.send({"id": request["id"], "pid": pid})

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"event": "exit", "pid": pid, "status": os.waitstatus_to_exitcode(status)})

    def handle(self, line: bytes) -> None:
        request = json.loads(line)
        if request.get("op") == "fork":
            try:
                self.fork(request)
            except OSError as exc:
                self.send({"id": request.get("id"), "error": f"fork failed: {exc}"})
        else:
            self.send({"id": request.get("id"), "error": f"unknown op {request.get('op')!r}"})

    def serve(self) -> None:
        pending = b""
        while True:
            readable, _, _ = select.select([self.requests, self.wake_read], [], [])
            if self.wake_read in readable:
                signals = os.read(self.wake_read, 512)
                if signal.SIGTERM in signals:
                    return
                self.reap()
            if self.requests in readable:
                data = os.read(self.requests, 65536)
                if not data:
                    return
                pending += data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        self.handle(line)

    def shutdown(self) -> None:
        for pid in self.children:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def main(modules: list[str]) -> None:
    # The protocol gets private copies of stdin/stdout; fds 0/1 become /dev/null and stderr,
    # so whatever a preloaded module prints cannot corrupt the protocol.
    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    os.chdir("/")  # hold no job's folder; a spare kernel starts here, a job's kernel in its cwd
    sys.modules[MODULE_NAME] = sys.modules[__name__]
    loaded, failed = preload(modules)
    warm_up()
    # Everything so far lives as long as the zygote: keep it out of the children's garbage
    # collections, which would otherwise walk (and so copy, page by page) the shared objects.
    gc.freeze()
    zygote = Zygote(requests, replies)
    hello = {"event": "hello", "pid": os.getpid(), "preloaded": loaded, "failed": failed}
    zygote.send({**hello, "threads": thread_count()})
    try:
        zygote.serve()
    except BrokenPipeError:
        pass
    finally:
        zygote.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
