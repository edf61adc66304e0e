"""`CacheCheckpoint`: the one owner of a cache checkpoint directory (what `cachepilot fit` writes, what ships).

A directory holds the learned policy (`policy/`), the forecaster head with its calibrated gate (`predictors/`),
the searched schedules (`searched_schedules.json`, and `searched_schedules_<N>.json` searched at other counts),
the condition split (`conditions.json`) and the record with the backbone fingerprint (`cachepilot_config.json`).
`enable(checkpoint=...)`, the bench and the tools resolve it here, so they all load the same policy and the same
forecaster, by one rule: the gated head once calibrated, else the bare head, else (searched schedules alone, as
the lean fit writes them) the training-free forecaster it chose, else Taylor-2 (`predictor_spec`), and
the same policy: the learned one, or the searched schedules where the fit found the learned policy no better than
them on validation (`selection`, recorded in policy/config.json) or trained none (a lean fit).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from cachepilot.conditions import ConditionSplit
from cachepilot.core.policy import CachePolicy
from cachepilot.core.predictor import Predictor
from cachepilot.errors import CheckpointError, InvalidInputError
from cachepilot.policies.baselines import Schedule
from cachepilot.policies.learned import LearnedPolicy
from cachepilot.policies.prior import SchedulePrior
from cachepilot.predictors.gated import GATE_FILE
from cachepilot.predictors.spec import make_predictor
from cachepilot.records import read_json_object
from cachepilot.runtime.fingerprint import check_fingerprint, scheduler_differences
from cachepilot.searched import SCHEDULES_FILE, SearchedSchedules, schedules_file

logger = logging.getLogger(__name__)
_SAID: set[Path] = set()  # checkpoints whose shipped searched schedule was logged once already

CONFIG_FILE = "cachepilot_config.json"
CONDITIONS_FILE = "conditions.json"
POLICY_DIR, PREDICTOR_DIR = "policy", "predictors"
FALLBACK_PREDICTOR = "taylor:2"  # no head in the checkpoint: the best training-free forecaster on both models
DEFAULT_TARGET = 0.3


def head_spec(predictor_dir: str | Path) -> str:
    """A head directory's predictor spec: `gated:` once `calibrate-forecaster` (or `fit`) wrote its gate."""
    return f"{'gated' if (Path(predictor_dir) / GATE_FILE).is_file() else 'learned'}:{predictor_dir}"


def _download(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(hub_id))
    except Exception as err:  # offline, unknown repo
        raise CheckpointError(f"cache checkpoint {hub_id} is neither a directory nor a reachable hub id: "
                              f"{err}".splitlines()[0]) from None


class SearchedSchedulePolicy(Schedule):
    """The searched schedules a checkpoint ships instead of its learned policy: at a searched target and step count
    exactly the searched mask (`Schedule`, whose spec the forecaster gate calibrated), elsewhere the prior's mask
    (`SchedulePrior.mask`: interpolated between targets, from the nearest searched count), as the learned policy's
    prior would give it."""

    def __init__(self, prior: SchedulePrior, target: float, num_steps: int):
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
            raise InvalidInputError(f"target compute fraction must be in (0, 1], got {target!r}")
        self.prior, self.target = prior, float(target)
        super().__init__(prior.mask(self.target, num_steps))

    def reset(self, num_steps: int, batch_size: int) -> None:
        if num_steps != self.num_steps:
            self.mask = torch.tensor(self.prior.mask(self.target, num_steps), dtype=torch.bool)
        super().reset(num_steps, batch_size)


class CacheCheckpoint:
    """A cache checkpoint directory: a `fit` directory (policy/ + predictors/ + ...), or a bare policy directory
    (config.json + model.safetensors, no head: Taylor-2 forecasts)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise CheckpointError(f"no cache checkpoint at {self.root} (not a directory)")
        if (self.root / POLICY_DIR / "config.json").is_file():
            self.policy_dir: Path | None = self.root / POLICY_DIR
        elif (self.root / "config.json").is_file() and (self.root / "model.safetensors").is_file():
            self.policy_dir = self.root  # a bare exported policy
        else:
            self.policy_dir = None
        head = self.root / PREDICTOR_DIR
        self.predictor_dir: Path | None = head if (head / "config.json").is_file() else None

    # -- loading and saving ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | Path | None = None) -> CacheCheckpoint:
        """A local directory, a hub id (`org/name`, downloaded with huggingface_hub, then read like a directory),
        or None: the checkpoint shipped with cachepilot (`cachepilot.checkpoints.DEFAULT_CACHE`)."""
        if path_or_hub_id is None:
            from cachepilot.checkpoints import DEFAULT_CACHE

            return cls(DEFAULT_CACHE)
        path = Path(path_or_hub_id)
        text = str(path_or_hub_id)
        if not path.exists() and text.count("/") == 1 and not text.startswith((".", "/")):
            path = _download(text)
        if not path.exists():
            raise CheckpointError(f"no cache checkpoint at {path_or_hub_id}")
        return cls(path)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Copy the checkpoint's files (policy, head and gate, schedules, conditions, record, README) to
        `directory`, laid out as `from_pretrained` reads them."""
        out = Path(directory)
        if out.resolve() == self.root.resolve():
            return out
        out.mkdir(parents=True, exist_ok=True)
        if self.policy_dir == self.root:  # a bare policy: its two files
            (out / POLICY_DIR).mkdir(exist_ok=True)
            for name in ("config.json", "model.safetensors"):
                shutil.copy2(self.root / name, out / POLICY_DIR / name)
        elif self.policy_dir is not None:
            shutil.copytree(self.policy_dir, out / POLICY_DIR, dirs_exist_ok=True)
        if self.predictor_dir is not None:
            shutil.copytree(self.predictor_dir, out / PREDICTOR_DIR, dirs_exist_ok=True)
        for path in self.schedule_files() + [self.root / CONDITIONS_FILE, self.root / CONFIG_FILE,
                                             self.root / "README.md"]:
            if path.is_file():
                shutil.copy2(path, out / path.name)
        return out

    # -- policy and predictor ----------------------------------------------------------------------------------
    @property
    def has_gate(self) -> bool:
        return self.predictor_dir is not None and (self.predictor_dir / GATE_FILE).is_file()

    @property
    def searched_only(self) -> bool:
        """Searched schedules and no policy (a lean fit): the schedules are the checkpoint's decisions."""
        return self.policy_dir is None and self.schedules() is not None

    def predictor_spec(self, target: float | None = None) -> str:
        """The forecaster of this checkpoint, one rule everywhere: the gated head once calibrated, else the
        bare head, else (searched schedules alone, written by a lean fit) the training-free forecaster it chose
        for the searched target nearest `target`, else Taylor-2."""
        if self.predictor_dir is not None:
            return head_spec(self.predictor_dir)
        searched = self.schedules() if self.policy_dir is None else None  # searched schedules alone: one read
        if searched is not None and searched.settings.get("recipe") == "lean":  # the lean fit's forecasters
            return searched.predictor_at(target)
        return FALLBACK_PREDICTOR

    def predictor(self, target: float | None = None) -> Predictor:
        return make_predictor(self.predictor_spec(target))

    def selection(self) -> dict:
        """What the fit chose to ship (`train.policy.policy_selection`, in policy/config.json): {"kind": "searched",
        "reason", "gain_db", "validation", ...} when the learned policy did not beat the searched schedules on
        validation; {} for a policy with no such record (shipped before the choice existed: the learned policy)."""
        if self.policy_dir is None:
            return {"kind": "searched", "reason": "the fit trained no policy (lean recipe)"} if self.searched_only \
                else {}
        found = read_json_object(self.policy_dir / "config.json", "the policy config").get("selection")
        return found if isinstance(found, dict) else {}

    @property
    def ships_searched(self) -> bool:
        return self.selection().get("kind") == "searched"

    def policy(self, target: float = DEFAULT_TARGET, per_batch: bool = False,
               actor_outside_range: bool = False, actor: bool = False) -> CachePolicy:
        """The checkpoint's policy at a target compute fraction: the learned policy (see `LearnedPolicy`), or, for a
        checkpoint whose fit found it no better than the searched schedules (`ships_searched`), those
        (`SearchedSchedulePolicy`). actor=True: the learned policy always (to measure it)."""
        if self.policy_dir is None and not self.searched_only:
            raise CheckpointError(f"no policy checkpoint at {self.root} (policy/config.json, or config.json and "
                                  f"model.safetensors, or {SCHEDULES_FILE}, needed)")
        if not actor and self.ships_searched:
            schedules = self.schedules()
            if schedules is None:
                raise CheckpointError(f"{self.root} ships its searched schedules ({self.selection().get('reason')}) "
                                      f"but holds no {SCHEDULES_FILE}")
            if self.root not in _SAID:
                _SAID.add(self.root)
                logger.info("%s: %s; it ships the searched schedule", self.root, self.selection().get("reason"))
            return SearchedSchedulePolicy(self.prior(), target, schedules.num_steps)
        if self.policy_dir is None:
            raise CheckpointError(f"{self.root} holds no learned policy, only its searched schedules")
        return LearnedPolicy(self.policy_dir, target=target, per_batch=per_batch,
                             actor_outside_range=actor_outside_range)

    # -- schedules, conditions, record ---------------------------------------------------------------------------
    def schedules_path(self, num_steps: int | None = None) -> Path:
        """Where the schedules searched at `num_steps` live (`searched_schedules_<N>.json`); None: the main file."""
        return self.root / schedules_file(num_steps)

    def schedule_files(self) -> list[Path]:
        """Every searched-schedules file of the checkpoint, the main one first."""
        extra = sorted(p for p in self.root.glob("searched_schedules_*.json") if p.stem.rpartition("_")[2].isdigit())
        main = self.root / SCHEDULES_FILE
        return ([main] if main.is_file() else []) + extra

    def schedules(self, num_steps: int | None = None) -> SearchedSchedules | None:
        """The schedules searched at `num_steps` when the checkpoint has that count's file, else the main file's
        (searched at its own count); None when there are none."""
        for path in ([self.schedules_path(num_steps)] if num_steps is not None else []) + [self.schedules_path()]:
            if path.is_file():
                return SearchedSchedules.read(path)
        return None

    def write_schedules(self, schedules: SearchedSchedules, num_steps: int | None = None) -> Path:
        """Write (atomically) the main schedules file, or with `num_steps` that count's own file."""
        path = self.schedules_path(num_steps)
        schedules.write(path)
        return path

    def schedule_predictor(self, schedules: SearchedSchedules, target: float | None = None) -> str:
        """The forecaster a searched schedule runs with: the checkpoint's own (`predictor_spec`) when the search
        scored with a learned head, wherever the directory moved; else the training-free one it named (for
        `target`'s nearest searched target, where each has its own)."""
        return self.predictor_spec() if schedules.predictor.partition(":")[0] in ("learned", "gated") \
            else schedules.predictor_at(target)

    def prior(self) -> SchedulePrior:
        """Every searched count's masks together (the learned policy's prior); uniform when none were searched."""
        files = self.schedule_files()
        return SchedulePrior.from_files(files) if files else SchedulePrior()

    def conditions(self) -> ConditionSplit | None:
        """The train / validation / evaluation conditions the checkpoint was fitted on (None if not recorded)."""
        path = self.root / CONDITIONS_FILE
        return ConditionSplit.from_json(read_json_object(path, "the condition split")) if path.is_file() else None

    def config(self) -> dict:
        """`cachepilot_config.json` ({} for a checkpoint without one, e.g. a bare policy)."""
        path = self.root / CONFIG_FILE
        return read_json_object(path, "the cache checkpoint record") if path.is_file() else {}

    def fingerprint(self) -> dict | None:
        """The backbone the checkpoint was made for: the record's, else the policy's."""
        found = self.config().get("backbone")
        if found is None and self.policy_dir is not None:
            found = read_json_object(self.policy_dir / "config.json", "the policy config").get("backbone")
        return found

    def check_backbone(self, transformer: torch.nn.Module) -> None:
        """A `CheckpointError` naming the first fingerprint field where the checkpoint and `transformer` differ."""
        fingerprint = self.fingerprint()
        if fingerprint is not None:
            check_fingerprint(fingerprint, transformer, f"the cache checkpoint {self.root}")

    def scheduler_differences(self, scheduler: object) -> list[str]:
        """The scheduler fields (class, shift, solver order, prediction type, spacing...) where `scheduler` differs
        from the one the checkpoint was fitted with; [] when the same, or when the checkpoint recorded none
        (fitted before schedulers were recorded: trusted as it was)."""
        return scheduler_differences(self.config().get("scheduler"), scheduler)

    def __repr__(self) -> str:
        return f"CacheCheckpoint({str(self.root)!r})"
