"""Work split over the processes of a ``torchrun`` launch: one rank per device, items by rank.

``torchrun --nproc_per_node=N -m facelib project IN OUT ...`` starts N copies of the command
with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in their environment (several machines: the
same command on each with ``--nnodes``/``--rdzv-endpoint``; torchrun's rendezvous joins them).
The batch commands then:

1. call :func:`init` once: it joins the process group (``nccl`` when the rank has a GPU,
   ``gloo`` on CPU) and picks the rank's device, ``cuda:LOCAL_RANK`` or the CPU;
2. take their share of the sorted item list with :func:`shard` (round robin, so every item is
   done by exactly one rank, the same one on every run);
3. write each result themselves (atomically), recording ``rank`` and ``world_size``;
4. combine what every rank did with :func:`gather` so that rank 0 prints one summary.

Without torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) everything here is a no-op: rank 0 of
1, the whole list, no process group, no store, no thread, no signal handler. Nothing here
starts processes itself.

Stopping together. The ranks talk through the launch's key-value store (the ``TCPStore`` at
``MASTER_ADDR:MASTER_PORT`` that torchrun's rendezvous provides, or that rank 0 hosts when the
environment is set by hand), under keys unique to the run (torchrun's run id, restart count and
a launch counter), through an :class:`Exchange`:

- Ctrl-C (SIGINT) or SIGTERM on one rank records "rank K was interrupted" in the store before
  the usual ``KeyboardInterrupt``. Every other rank sees it within a quarter of a second (a
  watcher thread that also beats a liveness counter) and is interrupted as if Ctrl-C had been
  pressed there: the batch it was working on is dropped (a result being written at that
  instant may be left without its JSON, which marks it unfinished, and is redone by the next
  run), its finished results stay (they are written atomically), and the batch commands raise
  :class:`facelib.errors.BatchInterrupted` with that rank's finished / skipped / not-reached
  lists. They also check :func:`interrupted` between batches. The CLI prints the lists per
  rank with :func:`stop_note` ("rank 0 of 2 stopped because rank 1 of 2 was interrupted")
  and exits 130. A rank that ends before reporting its results (an error) stops the others
  the same way. The handlers are installed only when :func:`init` runs in the main thread;
  elsewhere call :func:`announce_interrupt` where ``KeyboardInterrupt`` is caught.
- :func:`gather` posts each rank's result under its own key and polls for the others'; it
  never blocks in a collective. A rank that gives no sign of life for ``timeout`` seconds
  (``kill -9``, a lost machine; default 60, ``$FACELIB_DIST_TIMEOUT``) and never reported
  makes it raise :class:`facelib.errors.LaunchError` naming that rank. A slow rank that is
  alive is waited for.
- At exit a stopped launch waits (at most 20 s) until the other ranks have left, so torchrun,
  which terminates the remaining ranks as soon as one exits non-zero, does not cut their
  summaries short; the store's host (rank 0 outside torchrun) likewise waits for the others.

Per-item randomness must not depend on the rank or batch position: :func:`item_seed` derives a
seed from the item's name, so a distributed run reproduces a single-process run.
"""
from __future__ import annotations

import atexit
import datetime
import hashlib
import json
import logging
import os
import pickle
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch

from .errors import InputError, LaunchError

__all__ = ["DistInfo", "world", "init", "shard", "gather", "barrier", "item_seed", "is_main", "finish",
           "Exchange", "Stop", "interrupted", "announce_interrupt", "stop_note", "launch_prefix", "TIMEOUT_ENV"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a launch.

    Attributes:
        rank: 0 .. world_size - 1 over all machines; world_size: processes in the launch.
        local_rank: index among this machine's processes (selects its GPU).
        device: the device this rank works on ("cuda:<local_rank>" or "cpu"); None before :func:`init`.
        backend: "nccl", "gloo" or None (single process).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str | None = None
    backend: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"${name}: expected an integer (set by torchrun), got {value!r}") from None


def world() -> DistInfo:
    """Rank, world size and local rank of this process (from the process group when one is
    joined, else from torchrun's environment; 0 of 1 without torchrun)."""
    import torch.distributed as dist

    local = _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, backend=dist.get_backend())
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"$RANK / $WORLD_SIZE: rank {rank} is not in a launch of {world_size} process(es)")
    return DistInfo(rank, world_size, local)


def is_main() -> bool:
    """True on rank 0 (and without torchrun)."""
    return world().rank == 0


def init(device: "str | torch.device | None" = "auto") -> DistInfo:
    """Join torchrun's process group (when launched by it) and choose this rank's device.

    Args:
        device: "auto" = ``cuda:LOCAL_RANK`` when CUDA is available (several ranks on one GPU
            are allowed when there are fewer GPUs than ranks: ``LOCAL_RANK % device_count``),
            else the CPU; "cpu" forces the CPU (and the gloo backend); "cuda" picks the rank's
            GPU; anything else is used as given (single process only).
    Returns:
        :class:`DistInfo` with ``device`` set. Calling it again returns the same answer.

    Under a launch it also opens the launch's :class:`Exchange` on the store it joins through
    (a watcher thread and, in the main thread, SIGINT/SIGTERM handlers that tell the other
    ranks; :func:`finish` restores them): see the module notes.
    Raises:
        InputError: a bad ``$RANK``/``$WORLD_SIZE``, or a fixed device such as "cuda:1" in a
            multi-process launch (each rank chooses its own).
    """
    import torch.distributed as dist

    info = world()
    want = str(device) if device is not None else "auto"
    cuda = torch.cuda.is_available() and want != "cpu" and not want.startswith("mps")
    if info.distributed and want not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device {want}: under torchrun each rank uses its own device; "
                         "pass auto, cuda or cpu")
    if cuda and want in ("auto", "cuda"):
        dev = f"cuda:{info.local_rank % torch.cuda.device_count()}"
    elif want == "auto":
        dev = "mps" if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() \
            and not info.distributed else "cpu"
    else:
        dev = want
    backend = None
    if info.distributed:
        backend = "nccl" if dev.startswith("cuda") else "gloo"
        if dev.startswith("cuda"):
            torch.cuda.set_device(torch.device(dev))
        if not dist.is_initialized():
            store = _launch_store(info)
            if store is None:  # no MASTER_ADDR/MASTER_PORT: torch's own rendezvous, no exchange
                dist.init_process_group(backend=backend)
            else:
                dist.init_process_group(backend=backend, store=store, rank=info.rank, world_size=info.world_size)
                _open_exchange(store, info)
            log.info("rank %d of %d joined the process group (%s) on %s", info.rank, info.world_size, backend, dev)
        backend = dist.get_backend()
    return DistInfo(info.rank, info.world_size, info.local_rank, dev, backend)


def shard(items: Sequence[T], info: DistInfo | None = None) -> list[T]:
    """This rank's share of ``items``: every ``world_size``-th item starting at ``rank``.

    Give every rank the same list in the same order (e.g. sorted paths); the shares are then
    disjoint and together cover the list, and each item goes to the same rank on every run.
    """
    info = info or world()
    return list(items)[info.rank::info.world_size]


def gather(obj: Any, *, timeout: float | None = None, final: bool = True) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` without a process group.

    Every rank of the launch must call it, and every rank must make the same calls in the same
    order (each call is its own round of the exchange). ``final=False`` marks an exchange
    before the rank's work (e.g. agreeing on an output folder): only a final one counts as this
    rank having reported its results. After :func:`init` it goes through the launch's
    key-value store (:meth:`Exchange.gather`): it returns early with ``KeyboardInterrupt``
    when another rank was interrupted, and raises :class:`LaunchError` naming the ranks that
    gave no sign of life for ``timeout`` seconds (default ``$FACELIB_DIST_TIMEOUT`` or 60)
    without reporting. A process group joined without :func:`init` uses the collective
    ``all_gather_object`` (which waits for every rank, however long)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    if _EXCHANGE is not None and not _EXCHANGE.closed:
        return _EXCHANGE.gather(obj, timeout=timeout, final=final)
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def finish() -> None:
    """Leave the process group (no-op without one); call once at the end of a command.

    From here on a stop of another rank no longer interrupts this one and Ctrl-C is plain
    again; the exchange itself stays open until the process exits (see the module notes)."""
    import torch.distributed as dist

    if _EXCHANGE is not None:
        _EXCHANGE.active = False
        _restore_signals()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def item_seed(name: str, seed: int = 0) -> int:
    """A seed for one item that depends only on its name and the run's ``seed``:
    ``seed + (first 31 bits of SHA-256(name))``. Use a stable name such as the path
    relative to the input folder (with ``/`` separators)."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return int(seed) + (int.from_bytes(digest[:4], "big") >> 1)


# ----------------------------------------------------------------------------------------
# Stopping together: the launch's key-value store
# ----------------------------------------------------------------------------------------

TIMEOUT_ENV = "FACELIB_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 60.0  # s without a sign of life after which a rank counts as gone
_TICK = 0.25  # s between the watcher's looks at the store (and its liveness beats)
_LEAVE_WAIT = 20.0  # s at most, at exit of a stopped launch, for the other ranks to leave (torchrun allows 30)
_GONE_AFTER = 3.0  # s without a beat after which a rank that has not left is not waited for at exit
_STORE_TIMEOUT = datetime.timedelta(minutes=30)  # torch's default for the process group's store


@dataclass(frozen=True)
class Stop:
    """Why a launch stopped early.

    Attributes:
        rank: the rank that stopped first (interrupted, terminated, or ended early).
        world_size: processes in the launch.
        why: what happened to it, as a verb phrase ("was interrupted").
        at: the rank that holds this record (the process asking).
    """

    rank: int
    world_size: int
    why: str
    at: int

    @property
    def here(self) -> bool:
        """True on the rank that stopped first."""
        return self.rank == self.at

    def note(self) -> str:
        """One line for this rank's output."""
        who = f"rank {self.rank} of {self.world_size}"
        if self.here:
            return f"{who} {self.why}; the other ranks were told to stop"
        return f"rank {self.at} of {self.world_size} stopped because {who} {self.why}"


def _timeout_default() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise InputError(f"${TIMEOUT_ENV}: expected a number of seconds > 0, got {value!r}")
    return seconds


class Exchange:
    """Messages between the ranks of one launch through a ``torch.distributed`` key-value store.

    Each rank holds one, made over a store whose keys are private to the launch (for instance a
    ``PrefixStore``); :func:`init` makes it under torchrun. Results are pickled (the peers run
    the same program; the store is the launch's own, as for ``all_gather_object``).

    Args:
        store: the launch's store (``TCPStore``, ``HashStore``, ``PrefixStore`` over one).
        rank: this process's rank, 0 .. ``world_size`` - 1.
        world_size: processes in the launch (>= 1).
        timeout: seconds without a sign of life after which a rank that has not reported
            counts as gone (None: ``$FACELIB_DIST_TIMEOUT`` or 60).
        tick: seconds between polls of the store.
        hosts_store: this process runs the store's server (it waits for the others at exit).
    """

    def __init__(self, store: Any, rank: int, world_size: int, *, timeout: float | None = None,
                 tick: float = _TICK, hosts_store: bool = False) -> None:
        if not 0 <= rank < world_size:
            raise InputError(f"rank {rank} is not in a launch of {world_size} process(es)")
        self.store = store
        self.rank = rank
        self.world_size = world_size
        self.timeout = _timeout_default() if timeout is None else float(timeout)
        if not self.timeout > 0:
            raise InputError(f"timeout: expected seconds > 0, got {timeout}")
        self.tick = float(tick)
        self.hosts_store = hosts_store
        self.posted = False  # this rank posted its (final) results
        self.gathered = False  # ... and received every other rank's
        self._round = 0  # gather calls so far: each call has its own keys
        self.active = True  # a stop elsewhere interrupts this process (until finish())
        self.closed = False
        self.lost = False  # the store stopped answering
        self._stop: Stop | None = None
        self._interrupt_main = False
        self._looked = 0.0
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self.keep: list[Any] = []  # stores (a hosted server) that must live as long as the exchange

    # -- the stop record -------------------------------------------------------------
    def _parse(self, raw: bytes) -> Stop:
        try:
            data = json.loads(raw.decode("utf-8"))
            return Stop(int(data["rank"]), self.world_size, str(data["why"]), self.rank)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return Stop(-1, self.world_size, "stopped", self.rank)

    def announce(self, why: str = "was interrupted") -> Stop:
        """Record that this rank stopped (``why``: "was interrupted", ...) unless another rank
        did first; returns the launch's stop record (the first one)."""
        value = json.dumps({"rank": self.rank, "why": why})
        self._stop = self._parse(self.store.compare_set("stop", "", value))
        return self._stop

    def stopped(self) -> Stop | None:
        """The launch's stop record, or None while every rank goes on. Cheap: the watcher
        thread keeps it up to date; without one the store is asked at most every ``tick`` s."""
        if self._stop is None and self._thread is None and time.monotonic() - self._looked >= self.tick:
            self._looked = time.monotonic()
            self._look(self.store)
        return self._stop

    def _look(self, store: Any) -> None:
        if store.check(["stop"]):
            self._stop = self._parse(store.get("stop"))

    # -- liveness and the watcher ----------------------------------------------------
    def beat(self, store: Any | None = None) -> None:
        """Count one sign of life of this rank."""
        (store or self.store).add(f"beat/{self.rank}", 1)

    def start(self, watch_store: Any | None = None, *, interrupt_main: bool = False) -> None:
        """Start the watcher thread: it beats every ``tick`` s and, when another rank stops
        while ``active`` and before this one has gathered, interrupts the main thread (as
        Ctrl-C would) if ``interrupt_main``.

        Args:
            watch_store: a second client of the same store for the thread (default: ``store``).
        """
        self._interrupt_main = interrupt_main
        self._thread = threading.Thread(target=self._watch, args=(watch_store or self.store,),
                                        name="facelib-launch-watch", daemon=True)
        self._thread.start()

    def _watch(self, store: Any) -> None:
        import _thread

        while not self._halt.is_set():
            try:
                self.beat(store)
                if self._stop is None:
                    self._look(store)
                    stop = self._stop
                    if (stop is not None and not stop.here and self.active and not self.gathered
                            and self._interrupt_main):
                        log.debug("%s", stop.note())
                        _thread.interrupt_main()
            except Exception:  # noqa: BLE001 - the store's host has gone; gather() says so
                self.lost = True
                return
            self._halt.wait(self.tick)

    def _beats(self, ranks: Sequence[int]) -> dict[int, int]:
        return {r: int(self.store.add(f"beat/{r}", 0)) for r in ranks}

    # -- results -----------------------------------------------------------------------
    def gather(self, obj: Any, *, timeout: float | None = None, final: bool = True) -> list[Any]:
        """Post this rank's ``obj`` and wait for every other rank's (one round of the exchange;
        ``final``: these are the rank's results, after which a stop elsewhere no longer
        interrupts it).

        Returns:
            Every rank's object, in rank order.
        Raises:
            KeyboardInterrupt: another rank stopped (its :class:`Stop` note is the message).
            LaunchError: ranks that gave no sign of life for ``timeout`` s never reported
                (named), or the store is gone.
        """
        limit = self.timeout if timeout is None else float(timeout)
        key = f"result/{self._round}"
        self._round += 1
        try:
            self.store.set(f"{key}/{self.rank}", pickle.dumps(obj))
            self.posted = self.posted or final
            missing = [r for r in range(self.world_size) if r != self.rank]
            now = time.monotonic()
            last = {r: (b, now) for r, b in self._beats(missing).items()}
            while True:
                missing = [r for r in missing if not self.store.check([f"{key}/{r}"])]
                if not missing:  # every rank finished its share: a late stop changes nothing
                    break
                stop = self.stopped()
                if stop is not None and not stop.here:
                    raise KeyboardInterrupt(stop.note())
                now = time.monotonic()
                for r, b in self._beats(missing).items():
                    if b != last[r][0]:
                        last[r] = (b, now)
                gone = [r for r in missing if now - last[r][1] > limit]
                if gone:
                    names = ("rank " if len(gone) == 1 else "ranks ") + ", ".join(map(str, gone))
                    raise LaunchError(
                        f"{names} of {self.world_size} gave no sign of life for {limit:g} s and never "
                        f"reported {'its' if len(gone) == 1 else 'their'} results (killed, or its machine is unreachable); rank {self.rank}'s "
                        "finished results are complete; rerun the same command to go on "
                        f"(${TIMEOUT_ENV} sets the wait)")
                time.sleep(self.tick)
            out = [obj if r == self.rank else pickle.loads(self.store.get(f"{key}/{r}"))
                   for r in range(self.world_size)]
        except (RuntimeError, OSError) as e:  # torch's store errors are RuntimeErrors
            self.lost = True
            raise LaunchError(f"rank {self.rank} of {self.world_size}: lost the launch's key-value store "
                              f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
                              "the process that hosts it has exited; this rank's finished results are "
                              "complete; rerun the same command to go on") from None
        self.gathered = self.gathered or final
        return out

    # -- leaving -----------------------------------------------------------------------
    def leave(self, *, wait: float = _LEAVE_WAIT, gone_after: float = _GONE_AFTER) -> None:
        """Say this rank is leaving and, when the launch stopped or this rank hosts the
        store, wait (at most ``wait`` s) until the other ranks have left or have given no
        sign of life for ``gone_after`` s. Then stop the watcher."""
        if self.lost:
            self.close()
            return
        try:
            if not self.posted and self._stop is None:  # an error before its results: stop the others
                self.announce("ended before reporting its results (see its output)")
            self.store.set(f"left/{self.rank}", "1")
            if self._stop is not None or self.hosts_store:
                others = [r for r in range(self.world_size) if r != self.rank]
                start = now = time.monotonic()
                last = {r: (b, now) for r, b in self._beats(others).items()}
                while others and now - start < wait:
                    others = [r for r in others if not self.store.check([f"left/{r}"])]
                    now = time.monotonic()
                    for r, b in self._beats(others).items():
                        if b != last[r][0]:
                            last[r] = (b, now)
                    others = [r for r in others if now - last[r][1] <= gone_after]
                    if others:
                        time.sleep(self.tick / 2)
        except (RuntimeError, OSError, KeyboardInterrupt):
            pass
        finally:
            self.close()

    def close(self) -> None:
        """Stop the watcher thread (the store stays as it is)."""
        self.closed = True
        self.active = False
        self._halt.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.tick + 1)


_EXCHANGE: Exchange | None = None
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_PREVIOUS: dict[int, Any] = {}


def _launch_store(info: DistInfo) -> Any:
    """The launch's ``TCPStore`` as torch's ``env://`` rendezvous makes it (torchrun's agent
    hosts it, else rank 0), or None without ``MASTER_ADDR``/``MASTER_PORT``."""
    import torch.distributed as dist

    addr = os.environ.get("MASTER_ADDR")
    if not addr or not os.environ.get("MASTER_PORT"):
        return None
    port = _env_int("MASTER_PORT", 0)
    return dist.TCPStore(addr, port, info.world_size, is_master=_hosts_store(info), timeout=_STORE_TIMEOUT,
                         multi_tenant=True)


def _hosts_store(info: DistInfo) -> bool:
    return info.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"


def launch_prefix(store: Any, world_size: int) -> str:
    """The key prefix of this launch on ``store``: ``facelib/<run id>/<restart>/<launch>/``.

    torchrun's run id and restart count (``$TORCHELASTIC_RUN_ID``, ``$TORCHELASTIC_RESTART_COUNT``)
    tell launches and restarts apart; on a store that outlives launches (an external rendezvous
    server, reruns by hand) a counter does: every rank of a launch calls this once, and launches
    follow one another. A rerun therefore never sees an earlier launch's results or stop."""
    run = os.environ.get("TORCHELASTIC_RUN_ID") or "env"
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT") or "0"
    base = f"facelib/{run}/{restart}"
    launch = (int(store.add(f"{base}/joined", 1)) - 1) // world_size
    return f"{base}/{launch}/"


def _open_exchange(store: Any, info: DistInfo) -> None:
    """Keys unique to this run on ``store``; the watcher thread; the signal handlers."""
    global _EXCHANGE
    import torch.distributed as dist

    prefix = launch_prefix(store, info.world_size)
    exchange = Exchange(dist.PrefixStore(prefix, store), info.rank, info.world_size, hosts_store=_hosts_store(info))
    watch = dist.TCPStore(os.environ["MASTER_ADDR"], _env_int("MASTER_PORT", 0), is_master=False,
                          timeout=_STORE_TIMEOUT)
    exchange.keep += [store, watch]  # rank 0 outside torchrun hosts the server in `store`
    _EXCHANGE = exchange
    exchange.start(dist.PrefixStore(prefix, watch), interrupt_main=True)
    if threading.current_thread() is threading.main_thread():
        for sig in _SIGNALS:
            _PREVIOUS[sig] = signal.signal(sig, _on_signal)
    atexit.register(_at_exit)


def _on_signal(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM under a launch: tell the other ranks (unless they told us), then stop
    as Ctrl-C does."""
    ex = _EXCHANGE
    if ex is not None and ex.active and not ex.gathered and ex._stop is None:
        try:
            ex.announce("was interrupted" if signum == signal.SIGINT
                        else "was terminated (SIGTERM, as torchrun does when another rank fails)")
        except Exception:  # noqa: BLE001 - the store is gone: stop all the same
            pass
    previous = _PREVIOUS.get(signum)
    if callable(previous) and previous is not signal.default_int_handler:
        previous(signum, frame)
        return
    raise KeyboardInterrupt


def _restore_signals() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    while _PREVIOUS:
        sig, previous = _PREVIOUS.popitem()
        signal.signal(sig, previous if previous is not None else signal.SIG_DFL)


def _at_exit() -> None:
    ex = _EXCHANGE
    if ex is None or ex.closed:
        return
    if ex.stopped() is not None and threading.current_thread() is threading.main_thread():
        # torchrun terminates the remaining ranks once one exits non-zero: this one has printed
        # its summary; let it wait for the others and exit (torchrun's SIGKILL still bounds it)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ex.leave()


def interrupted() -> Stop | None:
    """The launch's :class:`Stop` when a rank was interrupted (or ended early), else None.

    Cheap enough for every item boundary; always None without a launch exchange (single
    process, or a process group joined without :func:`init`)."""
    ex = _EXCHANGE
    return ex.stopped() if ex is not None and not ex.closed else None


def announce_interrupt(why: str = "was interrupted") -> Stop | None:
    """Tell the other ranks that this one stopped (``why``) unless one did first; a no-op
    without a launch exchange. :func:`init`'s SIGINT/SIGTERM handler already does this in
    the main thread; call it where a ``KeyboardInterrupt`` is caught elsewhere."""
    ex = _EXCHANGE
    if ex is None or ex.closed or not ex.active or ex.gathered:
        return None
    if ex._stop is not None:
        return ex._stop
    try:
        return ex.announce(why)
    except (RuntimeError, OSError):
        return None


def stop_note() -> str | None:
    """One line saying which rank stopped the launch, from this rank's side, e.g. "rank 0 of
    2 stopped because rank 1 of 2 was interrupted"; None when nothing stopped it."""
    ex = _EXCHANGE
    stop = ex._stop if ex is not None else None
    return stop.note() if stop is not None else None
