"""`cachepilot` command line: train, generate, evaluate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cachepilot.errors import CachepilotError


def _add_train(sub: argparse._SubParsersAction) -> None:
    train = sub.add_parser("train", help="train a model of the project").add_subparsers(dest="what", required=True)

    bb = train.add_parser("backbone", help="train the embedded DiT on the digits (Lightning, resumable)")
    bb.add_argument("--out", type=Path, default=Path("checkpoints/digits-dit"), help="pipeline directory to write")
    bb.add_argument("--work-dir", type=Path, default=Path("runs/backbone"), help="Lightning checkpoints and logs")
    bb.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the shipped model's)")
    bb.add_argument("--layers", type=int, default=None, help="transformer blocks")
    bb.add_argument("--batch-size", type=int, default=None)
    bb.add_argument("--seed", type=int, default=0)
    bb.add_argument("--resume", action="store_true", help="continue from WORK_DIR/last.ckpt")
    bb.add_argument("--accelerator", default="auto", help="Lightning accelerator: auto, cpu, gpu")
    bb.set_defaults(func=_run_train_backbone)

    pr = train.add_parser("predictors", help="fit the learned forecaster head on a collection (Lightning, DDP-ready)")
    pr.add_argument("--data", type=Path, nargs="+", default=[Path("runs/collect")],
                    help="one or more `cachepilot collect` directories (same backbone)")
    pr.add_argument("--out", type=Path, default=Path("checkpoints/digits-dit-cache/predictors"))
    pr.add_argument("--work-dir", type=Path, default=Path("runs/predictors"))
    pr.add_argument("--steps", type=int, default=None)
    pr.add_argument("--batch-size", type=int, default=None)
    pr.add_argument("--rank", type=int, default=None)
    pr.add_argument("--devices", type=int, default=1)
    pr.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp")
    pr.add_argument("--accelerator", default="auto")
    pr.add_argument("--resume", action="store_true")
    pr.add_argument("--init", type=Path, default=None,
                    help="a saved head to start from (e.g. a cache's predictors/), fine-tuned with a fresh optimiser")
    pr.add_argument("--checkpoint-every", type=int, default=None,
                    help="optimisation steps between checkpoints (default 500): what a kill can lose at most")
    pr.set_defaults(func=_run_train_predictors)

    po = train.add_parser("policy", help="train the learned cache policy (MaskablePPO over CachingVecEnv)")
    po.add_argument("--work-dir", type=Path, default=Path("runs/policy"), help="SB3 checkpoints and CSV logs")
    po.add_argument("--out", type=Path, default=None,
                    help="export the actor here when training ends (default for the digits model: the shipped "
                         "checkpoints/digits-dit-cache/policy; required with --pipeline)")
    po.add_argument("--timesteps", type=int, default=None)
    po.add_argument("--envs", type=int, default=None, help="samples per batched env step")
    po.add_argument("--predictor", default=None, help="what FORECAST uses during training (default: learned)")
    po.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --work-dir")
    po.add_argument("--prior", default=None, nargs="+",
                    help="searched_schedules.json whose schedule the policy observes (default: the shipped "
                         "one; 'none': the uniform schedule); several, searched at different step counts: each "
                         "count observes the masks searched nearest to it")
    po.add_argument("--warm-start", action="store_true", help="behaviour-clone the prior schedule before PPO")
    po.add_argument("--seed", type=int, default=None)
    po.add_argument("--targets", type=float, nargs=2, default=None, help="range of target compute fractions")
    po.add_argument("--lr", type=float, default=None)
    po.add_argument("--ent-coef", type=float, default=None)
    po.add_argument("--seed-pool", type=int, default=None, metavar="K",
                    help="draw training noise seeds from K seeds only (K x conditions samples): each one's "
                         "full-compute reference is sampled once and kept (up to 2 GiB), so episodes after the pool's "
                         "first visit run no reference (default: fresh seeds, a reference run per episode)")
    po.add_argument("--steps", type=int, nargs="+", default=None,
                    help="denoising steps per episode (default 50); several (--steps 20 50 100): one policy for all, "
                         "each batch of episodes drawing one")
    _add_pipeline_args(po)
    po.set_defaults(func=_run_train_policy)

    clf = train.add_parser("classifier", help="train the reference digits classifier used by the metrics")
    clf.add_argument("--out", type=Path, default=Path("checkpoints/digits-classifier"))
    clf.add_argument("--epochs", type=int, default=60)
    clf.add_argument("--seed", type=int, default=0)
    clf.set_defaults(func=_run_train_classifier)


def _run_train_backbone(args: argparse.Namespace) -> None:
    from cachepilot.train.backbone import BackboneConfig, train_backbone

    from cachepilot.devices import check_lightning_hardware

    check_lightning_hardware(args.accelerator)
    config = BackboneConfig(seed=args.seed)
    for name, value in (("max_steps", args.steps), ("num_layers", args.layers), ("batch_size", args.batch_size)):
        if value is not None:
            if value < 1:
                raise CachepilotError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            setattr(config, name, value)
    train_backbone(config, args.work_dir, args.out, resume=args.resume, accelerator=args.accelerator)
    print(f"saved pipeline to {args.out}")


def _run_train_predictors(args: argparse.Namespace) -> None:
    from cachepilot.train.predictors import PredictorConfig, train_predictors

    from cachepilot.devices import check_lightning_hardware

    check_lightning_hardware(args.accelerator, args.devices, args.strategy)
    config = PredictorConfig()
    for name, value in (("max_steps", args.steps), ("batch_size", args.batch_size), ("rank", args.rank),
                        ("checkpoint_every", args.checkpoint_every)):
        if value is not None:
            if value < 1:
                raise CachepilotError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            setattr(config, name, value)
    module = train_predictors(args.data, args.out, args.work_dir, config, resume=args.resume, devices=args.devices,
                              strategy=args.strategy, accelerator=args.accelerator, init=args.init)
    if module.trainer.is_global_zero:  # DDP: one line, from the rank that saved
        print(f"saved predictor head to {args.out}")


def _run_train_policy(args: argparse.Namespace) -> None:
    from cachepilot.conditions import split_conditions
    from cachepilot.loading import load_pipeline
    from cachepilot.outputs import check_output_dir
    from cachepilot.train.fit import _conditions_for
    from cachepilot.train.policy import PolicyConfig, export_policy, train_policy

    if args.out is None:
        if args.pipeline is not None:
            raise CachepilotError("--out is required with --pipeline (the default is the shipped digits policy)")
        args.out = Path("checkpoints/digits-dit-cache/policy")
    config = PolicyConfig()
    for name, value in (("total_timesteps", args.timesteps), ("num_envs", args.envs)):
        if value is not None:
            if value < 1:
                raise CachepilotError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
            setattr(config, name, value)
    if args.steps is not None:
        if min(args.steps) < 1:
            raise CachepilotError(f"--steps must be >= 1, got {args.steps}")
        config.num_steps = args.steps[0] if len(args.steps) == 1 else tuple(args.steps)
    if args.predictor:
        config.predictor = args.predictor
    if args.targets is not None:
        config.targets = tuple(args.targets)
    for name, value in (("learning_rate", args.lr), ("ent_coef", args.ent_coef), ("seed", args.seed),
                        ("seed_pool", args.seed_pool)):
        if value is not None:
            setattr(config, name, value)
    config.warm_start = args.warm_start
    config.check()  # --seed -1, --lr nan, ...: before loading anything
    if args.prior is None and args.pipeline is None:
        from cachepilot.checkpoints import DEFAULT_CACHE

        config.prior = str(DEFAULT_CACHE / "searched_schedules.json")
    else:
        none = args.prior is None or (len(args.prior) == 1 and args.prior[0].lower() == "none")
        config.prior = None if none else (args.prior[0] if len(args.prior) == 1 else list(args.prior))
    check_output_dir(args.out)
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    split = split_conditions(_conditions_for(pipe, args.prompts))
    model = train_policy(config, args.work_dir, resume=args.resume, pipe=pipe, conditions=split.train,
                         eval_conditions=split.validation, call_kwargs=args.call_kwargs)
    export_policy(model, args.out, pipe.transformer, config)
    print(f"exported policy to {args.out}")


def _add_export(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export the last PPO checkpoint of a work dir as a plain-torch policy")
    ex.add_argument("--work-dir", type=Path, default=Path("runs/policy"))
    ex.add_argument("--out", type=Path, default=Path("checkpoints/digits-dit-cache/policy"))
    ex.add_argument("--pipeline", default=None,
                    help="the pipeline the policy was trained on, when the work dir has no backbone.json "
                         "(default: the embedded digits model)")
    ex.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    """Release path: no pickle. The actor comes from the zip's policy.pth (torch.load weights_only=True), the
    settings from the run's own policy_config.json / backbone.json; the zip's pickled `data` is never read."""
    import json

    from cachepilot.errors import CheckpointError
    from cachepilot.loading import load_pipeline
    from cachepilot.train.policy import PolicyConfig, _last_checkpoint, export_policy, read_checkpoint

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


def _add_prior(sub: argparse._SubParsersAction) -> None:
    ap = sub.add_parser("add-prior", help="give an exported learned policy the searched schedules of another step "
                                          "count (it observes the masks searched nearest to each call's count)")
    ap.add_argument("policy", type=Path, help="an exported policy directory (config.json + model.safetensors)")
    ap.add_argument("schedules", type=Path, nargs="+", help="searched_schedules.json files (`search-schedule`)")
    ap.set_defaults(func=_run_add_prior)


def _run_add_prior(args: argparse.Namespace) -> None:
    from cachepilot.train.policy import add_prior

    steps = add_prior(args.policy, args.schedules)
    print(f"{args.policy}: prior searched at {', '.join(map(str, steps))} steps")


def _add_search(sub: argparse._SubParsersAction) -> None:
    se = sub.add_parser("search-schedule", help="offline greedy search of the best fixed schedule per budget")
    se.add_argument("--targets", type=float, nargs="+", default=[0.2, 0.3, 0.4, 0.5])
    se.add_argument("--out", type=Path, default=Path("checkpoints/digits-dit-cache/searched_schedules.json"))
    se.add_argument("--steps", type=int, default=50)
    se.add_argument("--samples", type=int, default=16, help="training seeds the schedules are scored on")
    se.add_argument("--predictor", default="learned")
    se.add_argument("--max-sweeps", type=int, default=6, help="greedy sweeps after the best start (0: the best of "
                                                             "the starts: uniform, TaylorSeer-shaped, and the "
                                                             "training-free masks within the budget)")
    se.add_argument("--compute-last", action="store_true",
                    help="keep the last step computed (by default it may be forecast, as TaylorSeer's schedule does); "
                         "for a prior added to a policy trained with such masks")
    se.add_argument("--select-samples", type=int, default=0,
                    help="score every start and each sweep's best again on this many other training samples and "
                         "keep the best there (guards against the few search samples; 0: off)")
    se.add_argument("--init", type=Path, nargs="+", default=[],
                    help="searched_schedules.json files of the same step count: their masks for each target are more "
                         "starts (refines earlier searches)")
    _add_pipeline_args(se)
    se.set_defaults(func=_run_search)


def _run_search(args: argparse.Namespace) -> None:
    import json

    from cachepilot.driver import SamplingDriver
    from cachepilot.loading import load_pipeline
    from cachepilot.train.schedule_search import search_schedule

    bad = [t for t in args.targets if not 0 < t <= 1]
    if bad:
        raise CachepilotError(f"--targets must be compute fractions in (0, 1], got {bad}")
    for name, value in (("--samples", args.samples), ("--steps", args.steps)):
        if value < 1:
            raise CachepilotError(f"{name} must be >= 1, got {value}")
    for name, value in (("--max-sweeps", args.max_sweeps), ("--select-samples", args.select_samples)):
        if value < 0:
            raise CachepilotError(f"{name} must be >= 0, got {value}")
    from cachepilot.outputs import check_output_file

    check_output_file(args.out)
    earlier = _earlier_masks(args.init, args.steps)
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    driver = SamplingDriver(pipe, args.steps, _call_kwargs(args))
    conditions = _conditions(args, pipe)
    found = {}
    for target in args.targets:  # each schedule is written as soon as it is found: an interruption keeps them
        mask, score = search_schedule(driver, conditions, target, args.samples, predictor=args.predictor,
                                      max_sweeps=args.max_sweeps, compute_last=args.compute_last,
                                      select_samples=args.select_samples,
                                      extra_starts=earlier.get(f"{target:g}", []))
        found[f"{target:g}"] = {"mask": "".join("1" if m else "0" for m in mask), "train_psnr": score}
        print(f"target {target:g}: {found[f'{target:g}']['mask']} (training PSNR {score:.2f} dB)")
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(json.dumps({"num_steps": args.steps, "predictor": args.predictor, "samples": args.samples,
                                   "seed": 300_000, "select_samples": args.select_samples,
                                   "schedules": found}, indent=2))
        tmp.replace(args.out)


def _earlier_masks(paths: list[Path], steps: int) -> dict[str, list[list[bool]]]:
    """target -> the distinct masks of earlier searches at `steps` steps (refused before any model is loaded)."""
    from cachepilot.policies.prior import SchedulePrior

    found: dict[str, list[list[bool]]] = {}
    for path in paths:
        prior = SchedulePrior.from_file(path)
        if prior.searched_steps() != [steps]:
            raise CachepilotError(f"--init {path} was searched at {prior.searched_steps()} steps, not {steps}")
        for t, mask in prior.by_steps[steps].items():
            masks = found.setdefault(f"{t:g}", [])
            if [c == "1" for c in mask] not in masks:
                masks.append([c == "1" for c in mask])
    return found


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    ca = sub.add_parser("calibrate-forecaster", help="measure learned head vs. Taylor per step count and interval "
                                                     "(closed loop, training seeds) and write the head's gate")
    ca.add_argument("head", type=Path, help="a learned head directory (a cache's predictors/); the gate is written "
                                           "there as forecaster_gate.json")
    ca.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100], help="step counts to calibrate")
    ca.add_argument("--intervals", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8],
                    help="fixed intervals to score (1: two computes then one skip, every forecast one step apart)")
    ca.add_argument("--samples", type=int, default=16, help="training seeds each candidate is scored on")
    ca.add_argument("--schedules", nargs="+", default=[], metavar="SPEC",
                    help="whole schedules to score with each forecaster, kept per step count and used for that "
                         "policy whatever the spacings: fixed:N, threshold:DELTA, schedule:MASK, ts-schedule:N "
                         "(TaylorSeer's computes), learned:TARGET (the policy at --policy), searched:FILE")
    ca.add_argument("--schedule-steps", type=int, nargs="+", default=None,
                    help="step counts the schedules are scored at (default: --steps)")
    ca.add_argument("--policy", type=Path, default=None, help="a policy directory, for learned:TARGET schedules")
    _add_pipeline_args(ca)
    ca.set_defaults(func=_run_calibrate)


def _run_calibrate(args: argparse.Namespace) -> None:
    from cachepilot.driver import check_num_steps
    from cachepilot.loading import load_pipeline
    from cachepilot.train.calibrate_forecaster import calibrate_gate, schedule_policies

    schedule_steps = args.steps if args.schedule_steps is None else args.schedule_steps
    bad = [n for n in args.steps + schedule_steps if n < 2] + [n for n in args.intervals if n < 1]
    if bad or args.samples < 1:
        raise CachepilotError(f"--steps must be >= 2, --intervals >= 1 and --samples >= 1, got {bad or args.samples}")
    if not (args.head / "config.json").is_file():
        raise CachepilotError(f"no learned head at {args.head} (config.json is missing)")
    for steps in schedule_steps:  # every schedule spec checked before the pipeline loads
        for spec in args.schedules:
            schedule_policies(spec, steps, args.policy)
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    for steps in sorted(set(args.steps + schedule_steps)):
        check_num_steps(pipe, steps)
    record = calibrate_gate(pipe, args.head, _conditions(args, pipe), args.steps, args.intervals, args.samples,
                            _call_kwargs(args), out=args.head, schedules=args.schedules,
                            schedule_counts=schedule_steps, policy_dir=args.policy)
    for steps, entry in record["counts"].items():
        print(f"{steps} steps, spacing 1..{len(entry['choices'])}: {' '.join(entry['choices'])}")
    for steps, by_spec in record["schedules"].items():
        for key, entry in by_spec.items():
            print(f"{steps} steps, {entry['spec']}: {entry['choice']} ({', '.join(f'{c} {db:.2f} dB' for c, db in entry['psnr'].items())})")


def _add_collect(sub: argparse._SubParsersAction) -> None:
    col = sub.add_parser("collect", help="record stack inputs and residuals (HF datasets shards, resumable)")
    col.add_argument("--out", type=Path, default=Path("runs/collect"))
    col.add_argument("--samples", type=int, default=256, help="samples per policy")
    col.add_argument("--policies", nargs="+", default=["always", "fixed:3", "fixed:5"],
                     help="trajectory kinds: full compute and cached")
    col.add_argument("--predictor", default="taylor:1", help="what cached trajectories forecast with")
    col.add_argument("--steps", type=int, default=50)
    col.add_argument("--guidance", type=float, default=None, help="guidance_scale of every call (default: the pipeline's)")
    col.add_argument("--seed", type=int, default=100_000)
    col.add_argument("--num-shards", type=int, default=6)
    col.add_argument("--shard-index", type=int, nargs="*", default=None,
                     help="write only these shards (one worker per shard); default all")
    col.add_argument("--batch-size", type=int, default=64)
    _add_pipeline_args(col)
    col.add_argument("--checkpoint", dest="pipeline", default=None, help=argparse.SUPPRESS)  # the old name
    col.set_defaults(func=_run_collect)


def _call_kwargs(args: argparse.Namespace) -> dict:
    kwargs = dict(args.call_kwargs)
    if getattr(args, "guidance", None) is not None:
        kwargs["guidance_scale"] = args.guidance
    return kwargs


def _conditions(args: argparse.Namespace, pipe) -> list[dict]:
    """The train split of --prompts (default: every class of a class-conditional pipeline)."""
    from cachepilot.conditions import split_conditions
    from cachepilot.train.fit import _conditions_for

    return list(split_conditions(_conditions_for(pipe, args.prompts)).train.conditions)


def _run_collect(args: argparse.Namespace) -> None:
    from cachepilot.loading import load_pipeline
    from cachepilot.train.collect import CollectConfig, check_config, collect

    config = CollectConfig(samples_per_policy=args.samples, steps=args.steps, call_kwargs=_call_kwargs(args),
                           seed=args.seed, policies=list(args.policies), predictor=args.predictor,
                           num_shards=args.num_shards, batch_size=args.batch_size, conditions=[{}])
    check_config(config)  # before loading anything
    if args.shard_index:
        bad = [i for i in args.shard_index if not 0 <= i < args.num_shards]
        if bad:
            raise CachepilotError(f"--shard-index {bad} outside 0..{args.num_shards - 1} (--num-shards {args.num_shards})")
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    config.conditions = _conditions(args, pipe)
    paths = collect(pipe, args.out, config, shards=args.shard_index)
    print(f"{len(paths)} shard(s) ready under {args.out}/shards")


def _run_train_classifier(args: argparse.Namespace) -> None:
    from cachepilot.train.classifier import train_classifier

    accuracy = train_classifier(args.out, epochs=args.epochs, seed=args.seed)
    print(f"held-out accuracy {accuracy:.4f}; saved classifier to {args.out}")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, default=None, help="pipeline directory (default: the embedded one)")
    p.add_argument("--steps", type=int, default=50, help="denoising steps")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale (default: the pipeline's)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")


def _add_generate(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="sample images (digits by default) and write a PNG grid")
    gen.add_argument("--classes", type=int, nargs="+", default=None,
                     help="one image per class id (class-conditional pipelines; default 0-9 for the digits model)")
    gen.add_argument("--cache", default=None,
                     help="a `cachepilot fit` directory (or hub id) whose learned policy --policy learned uses")
    gen.add_argument("--pipeline", default=None, help="diffusers pipeline directory or hub id (default: the "
                                                      "embedded digits model)")
    gen.add_argument("--prompts", default=None, help="one image per condition of this file (text pipelines)")
    gen.add_argument("--call-kwargs", type=_json_object, default={}, help="JSON kwargs of every pipeline call")
    gen.add_argument("--dtype", default=None)
    gen.add_argument("--out", type=Path, default=Path("grid.png"))
    gen.add_argument("--policy", default=None,
                     help="cache policy: always | fixed:N | threshold:DELTA | schedule:MASK (default: no cache)")
    gen.add_argument("--predictor", default=None,
                     help="what skipped steps use: reuse (default; learned with a learned policy) | taylor:1 | "
                          "taylor:2 | taylor:1.5 (their mean) | learned")
    gen.add_argument("--speed", type=float, default=None,
                     help="target compute fraction of the learned policy (--policy learned --speed 0.3)")
    _add_sampling_args(gen)
    gen.set_defaults(func=_run_generate)

    ev = sub.add_parser("evaluate", help="class accuracy and Fréchet distance of generated digits")
    ev.add_argument("--samples-per-class", type=int, default=50)
    ev.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    _add_sampling_args(ev)
    ev.set_defaults(func=_run_evaluate, seed=10_000)


def _run_generate(args: argparse.Namespace) -> None:
    from cachepilot.commands import generate

    policy, predictor = args.policy, args.predictor
    if args.speed is not None or policy == "learned":
        if policy not in (None, "learned"):
            raise CachepilotError("--speed sets the learned policy's target: use it with --policy learned")
        policy = f"learned:{0.3 if args.speed is None else args.speed}"
    if policy is not None and policy.startswith("learned") and predictor is None and args.cache is None:
        predictor = "learned"
    if args.prompts is not None:
        from cachepilot.conditions import load_conditions

        conditions = list(load_conditions(args.prompts).conditions)
    else:
        conditions = [{"class_labels": c} for c in (args.classes if args.classes is not None else range(10))]
    kwargs = dict(args.call_kwargs)
    if args.guidance is not None:
        kwargs["guidance_scale"] = args.guidance
    generate(conditions, args.out, pipeline=args.pipeline or args.checkpoint, steps=args.steps, call_kwargs=kwargs,
             seed=args.seed, batch_size=args.batch_size, device=args.device, dtype=args.dtype, policy=policy,
             predictor=predictor, cache=args.cache)


def _run_evaluate(args: argparse.Namespace) -> None:
    from cachepilot.commands import evaluate

    evaluate(args.samples_per_class, checkpoint=args.checkpoint, steps=args.steps, guidance=args.guidance,
             seed=args.seed, batch_size=args.batch_size, device=args.device, json_path=args.json)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="Pareto benchmark of every cache method vs. full compute")
    bench.add_argument("--out", type=Path, default=Path("out/bench"), help="writes results.json/.md, pareto.png")
    bench.add_argument("--samples", type=int, default=64, help="images per method and knob (classes balanced)")
    bench.add_argument("--steps", type=int, default=50)
    bench.add_argument("--guidance", type=float, default=None)
    bench.add_argument("--batch-size", type=int, default=64)
    bench.add_argument("--repeats", type=int, default=3, help="timing repeats (median)")
    bench.add_argument("--seed", type=int, default=20_000)
    bench.add_argument("--methods", nargs="+", default=None, help="only these method names (default: all)")
    bench.add_argument("--cache", type=Path, default=None,
                       help="a `cachepilot fit` directory whose learned methods join the sweep (default for the "
                            "digits model: the shipped cache)")
    _add_pipeline_args(bench)
    bench.add_argument("--checkpoint", dest="pipeline", default=None, help=argparse.SUPPRESS)  # the old name
    bench.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> None:
    from cachepilot.commands import bench

    bench(args.out, samples=args.samples, steps=args.steps, guidance=args.guidance, batch_size=args.batch_size,
          repeats=args.repeats, seed=args.seed, methods=args.methods, pipeline=args.pipeline, prompts=args.prompts,
          cache=args.cache, call_kwargs=args.call_kwargs, device=args.device, dtype=args.dtype)


def _add_pipeline_args(p: argparse.ArgumentParser) -> None:
    """The options that name a user's pipeline and what it is sampled with."""
    p.add_argument("--pipeline", default=None,
                   help="diffusers pipeline directory or hub id (DiffusionPipeline.from_pretrained); default: the "
                        "embedded digits model")
    p.add_argument("--prompts", default=None,
                   help="conditions: a prompts file (one per line), a JSONL of call kwargs per sample, a saved HF "
                        "dataset directory, hf:NAME[:SPLIT], or classes:0-9 (default: every class of a "
                        "class-conditional pipeline)")
    p.add_argument("--call-kwargs", type=_json_object, default={},
                   help='JSON object of kwargs for every pipeline call, e.g. \'{"height": 512, "guidance_scale": 3.5}\'')
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default=None, help="float32 | float16 | bfloat16 (default: as saved)")


def _json_object(text: str) -> dict:
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def _add_fit(sub: argparse._SubParsersAction) -> None:
    fit = sub.add_parser("fit", help="the whole recipe on a pipeline: collect -> predictors -> schedule search -> "
                                     "policy -> export -> bench, each stage resumable")
    fit.add_argument("--out", type=Path, required=True, help="the cache checkpoint directory to write")
    _add_pipeline_args(fit)
    fit.add_argument("--steps", type=int, default=None, help="denoising steps (default 50; 10 with --smoke)")
    fit.add_argument("--policy-steps", type=int, nargs="+", default=None,
                     help="step counts the learned policy trains on, e.g. 20 50 100 (default: --steps)")
    fit.add_argument("--targets", type=float, nargs="+", default=None, help="compute fractions to fit and report")
    fit.add_argument("--smoke", action="store_true", help="every stage at toy sizes: check the plumbing in minutes")
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(func=_run_fit)


def _run_fit(args: argparse.Namespace) -> None:
    from cachepilot.loading import load_pipeline
    from cachepilot.train.fit import FitConfig, fit

    overrides = {"call_kwargs": args.call_kwargs, "seed": args.seed}
    if args.steps is not None:
        overrides["steps"] = args.steps
    if args.targets is not None:
        overrides["targets"] = list(args.targets)
    if args.policy_steps is not None:
        overrides["policy_steps"] = list(args.policy_steps)
    config = FitConfig.smoke(**overrides) if args.smoke else FitConfig(**overrides)
    config.check()
    pipe = load_pipeline(args.pipeline, device=args.device, dtype=args.dtype)
    record = fit(pipe, args.out, args.prompts, config)
    print(f"fitted cache written to {args.out} (stage seconds {record['stage_seconds']}); use it with "
          f"cachepilot.enable(pipe, checkpoint={str(args.out)!r}, speed=0.3)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cachepilot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_generate(sub)
    _add_bench(sub)
    _add_collect(sub)
    _add_search(sub)
    _add_calibrate(sub)
    _add_prior(sub)
    _add_export(sub)
    _add_fit(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CachepilotError, FileNotFoundError) as err:
        print(f"cachepilot: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print("cachepilot: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
