"""The outcome of a batch job over a folder: what was written, skipped, failed, kept and not reached.

:class:`FolderResult` is shared by the jobs whose items are optimised in memory-sized batches
(:class:`facelib.projection_folder.ProjectFolderResult`, :class:`facelib.tuning.TuneFolderResult`);
each names its own work (``DONE``: "projected", "tuned") and results (``ITEMS``) for the summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

__all__ = ["FolderResult"]


@dataclass
class FolderResult:
    """Outcome of a folder job.

    Attributes:
        written: result files written in this run.
        skipped: items already done with the same inputs, settings and generator.
        failed: item path (or folder entry) -> reason.
        kept: item path -> why its finished result (other settings, another generator, another
            input) was left as it is (``overwrite=True`` replaces it).
        not_reached: items not started because the run was interrupted.
        interrupted: True when Ctrl-C ended the run.
        notes: what the run decided on its own (batch size from free memory, smaller batches
            after running out of memory, writing beside results of other settings).
    """

    DONE: ClassVar[str] = "done"  # the summary's verb: "projected 3, skipped 1 already done, ..."
    ITEMS: ClassVar[str] = "result(s)"  # what "kept N ... made with other settings" counts

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    kept: dict[str, str] = field(default_factory=dict)
    not_reached: list[Path] = field(default_factory=list)
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No failures, and something was done or already done."""
        return not self.failed and not self.nothing_done

    @property
    def nothing_done(self) -> bool:
        """True when results of other settings were kept and nothing was written or already done."""
        return bool(self.kept) and not self.written and not self.skipped

    def summary(self) -> str:
        """Multi-line report: the counts, then notes, failures, kept results and what was not reached."""
        head = "INTERRUPTED: " if self.interrupted else ""
        tail = f", not reached {len(self.not_reached)}" if self.interrupted else ""
        lines = [f"{head}{self.DONE} {len(self.written)}, skipped {len(self.skipped)} already done, "
                 f"failed {len(self.failed)}{tail}"]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  failed: {p}: {why}" for p, why in self.failed.items()]
        lines += [f"  kept: {p}: {why}" for p, why in self.kept.items()]
        if self.kept:
            lines.append(f"kept {len(self.kept)} {self.ITEMS} made with other settings; rerun with --overwrite "
                         "(overwrite=True) to replace them")
        lines += [f"  not reached: {p}" for p in self.not_reached]
        return "\n".join(lines)
