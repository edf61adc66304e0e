"""`cachepilot export`: the last PPO checkpoint of a work dir as a plain-torch policy (no pickle read)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cachepilot.cli.common import OUT
from cachepilot.errors import CachepilotError


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export the last PPO checkpoint of a work dir as a plain-torch policy")
    ex.add_argument("--work-dir", type=Path, default=Path("runs/policy"))
    ex.add_argument("--out", type=Path, default=OUT / "policy", help="the policy directory to write")
    ex.add_argument("--pipeline", default=None,
                    help="the pipeline the policy was trained on, when the work dir has no backbone.json "
                         "(default: the embedded digits model)")
    ex.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    """Release path: no pickle. The actor comes from the zip's policy.pth (torch.load weights_only=True), the
    settings from the run's own policy_config.json / backbone.json; the zip's pickled `data` is never read."""
    from cachepilot.errors import CheckpointError
    from cachepilot.loading import load_pipeline
    from cachepilot.outputs import check_output_dir
    from cachepilot.train.policy import PolicyConfig, _last_checkpoint, export_policy, read_checkpoint

    check_output_dir(args.out, create=False)
    config_path = args.work_dir / "policy_config.json"
    last = _last_checkpoint(args.work_dir) if args.work_dir.is_dir() else None
    if last is None or not config_path.exists():
        raise CachepilotError(f"no PPO checkpoint (ppo_*_steps.zip + policy_config.json) in {args.work_dir}")
    config = PolicyConfig.from_json(config_path)
    backbone_path = args.work_dir / "backbone.json"
    if backbone_path.exists() and args.pipeline is None:
        try:  # recorded at training: no pipeline load needed
            backbone = json.loads(backbone_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise CheckpointError(f"{backbone_path} is not valid JSON ({err})") from None
    else:
        backbone = load_pipeline(args.pipeline).transformer
    export_policy(read_checkpoint(last), args.out, backbone, config)
    print(f"exported {last} to {args.out}")
