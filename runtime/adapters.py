"""Where a diffusers transformer keeps its block stack, and how its blocks are called.

The cache engine works on the *stack*: everything from the first block's input to the last block's
output. The stack is discovered, not declared per model class:

- a *block list* is a direct child `nn.ModuleList` of the model whose blocks are all of a known block
  class: one diffusers registers in `diffusers.hooks._helpers.TransformerBlockRegistry` (the metadata its
  own First-Block-Cache uses: where `hidden_states` / `encoder_hidden_states` sit in a block's tuple
  output, and what the block calls them), or one of `EXTRA_BLOCKS` (block classes diffusers does not
  register);
- a model with one block list caches that list; several lists form one stack only for the model classes
  in `CHAINED_LISTS`, whose forward runs them back to back with nothing in between (checked per family by
  tests/runtime/test_families.py and test_more_families.py: always-compute is bit-exact); for those in
  `LAST_LIST` only the last list is cached (the earlier ones run every step); `REFUSED` families get their
  reason; any other model with several lists is refused, since caching one of them alone could feed stale
  streams to the next. At run time the hooks check that nothing changes `hidden_states` between two blocks
  of the stack (runtime/hooks.py).
- the layout is verified, not trusted: on the first stack call of each call signature every block's output
  is checked against it (`StackAdapter.check_output`) before anything is cached, so a wrong registry entry
  is a clear error naming the block class (known-wrong entries are fixed in `LAYOUT_OVERRIDES`).

So a new family is a table entry (diffusers' registry, or a line in runtime/families.py), not a new
adapter class.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cachepilot.errors import CachepilotError
from cachepilot.runtime.families import (
    CHAINED_LISTS, EXTRA_BLOCKS, LAST_LIST, LAYOUT_OVERRIDES, PER_BLOCK_ARGUMENTS, REFUSED,
    STREAM_REBUILT_BETWEEN_BLOCKS,
    TESTED_MODELS, BlockLayout,
)

__all__ = ["CHAINED_LISTS", "EXTRA_BLOCKS", "BlockLayout", "StackAdapter", "UnsupportedModelError", "get_adapter"]

try:  # diffusers' own block metadata (what its FirstBlockCache / FasterCache hooks use)
    from diffusers.hooks._helpers import TransformerBlockRegistry
except ImportError:  # pragma: no cover - older diffusers: only our own table
    TransformerBlockRegistry = None


class UnsupportedModelError(CachepilotError, TypeError):
    """enable()/apply_cache() was given a model the engine has no adapter for."""


def block_layout(cls: type) -> BlockLayout | None:
    """The layout of a block class (or of its nearest known base class); None for unknown classes."""
    for base in cls.__mro__:
        if base.__name__ in LAYOUT_OVERRIDES:
            return LAYOUT_OVERRIDES[base.__name__]
        if TransformerBlockRegistry is not None:
            try:
                meta = TransformerBlockRegistry.get(base)
            except ValueError:
                meta = None
            if meta is not None:
                return BlockLayout(meta.return_hidden_states_index or 0, meta.return_encoder_hidden_states_index,
                                   meta.hidden_states_argument_name, meta.encoder_hidden_states_argument_name)
        if base.__name__ in EXTRA_BLOCKS:
            return EXTRA_BLOCKS[base.__name__]
    return None


@dataclass(frozen=True)
class StackAdapter:
    """block_lists: attribute names of the block lists, in execution order.
    layout: how every block of the stack takes and returns the streams.
    streams: the names of the tensors a block passes to the next one; the first is the stream the
    model uses after the stack, whose residual (output - input) is what gets cached."""

    model_class: str
    block_lists: tuple[str, ...]
    layout: BlockLayout
    native: bool = False  # blocks get per-block arguments: the model runs them itself (runtime/hooks.py)
    checks_handoff: bool = True  # whether each block must get the very stream the block before returned

    @property
    def streams(self) -> tuple[str, ...]:
        if self.layout.encoder_index is None:
            return ("hidden_states",)
        return ("hidden_states", "encoder_hidden_states")

    @property
    def returns_tuple(self) -> bool:
        return self.layout.encoder_index is not None

    def blocks(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        return [block for name in self.block_lists for block in getattr(model, name)]

    def bind(self, block: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A block call's arguments by name (positional ones included; `**kwargs` spread out; the streams
        under the engine's names)."""
        signature = _signature(type(block))
        arguments = dict(signature.bind(block, *args, **kwargs).arguments)
        names = list(signature.parameters.values())
        arguments.pop(names[0].name, None)  # self
        for param in names:
            if param.kind is param.VAR_KEYWORD and param.name in arguments:
                arguments.update(arguments.pop(param.name))
            elif param.kind is param.VAR_POSITIONAL and param.name in arguments:
                arguments[param.name] = _ExtraPositional(arguments[param.name])
        for ours, theirs in (("hidden_states", self.layout.hidden_arg),
                             ("encoder_hidden_states", self.layout.encoder_arg)):
            if ours != theirs and theirs in arguments:
                arguments[ours] = arguments.pop(theirs)
        return arguments

    def streams_of(self, block: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The streams of a block call, without binding the whole signature: what a passed-through block
        needs, at every step of every block (`bind` costs ~10x more)."""
        found = {}
        for ours, (theirs, position) in _stream_positions(type(block), self.layout).items():
            if theirs in kwargs:
                found[ours] = kwargs[theirs]
            elif position is not None and position < len(args):
                found[ours] = args[position]
            else:
                found[ours] = None
        return found

    def unbind(self, block_class: type, call: dict[str, Any], positional: int) -> tuple[tuple, dict[str, Any]]:
        """`bind` undone: (args, kwargs) that call a block the way the model called `block_class`'s block
        with `positional` positional arguments. Blocks of the other lists of a chained stack get the same
        layout, as the model passes it (HunyuanVideo's two lists name the rotary embedding differently and
        get it by position). Extra positional arguments (`*args`) are always passed by position."""
        remaining = dict(call)
        for ours, theirs in (("hidden_states", self.layout.hidden_arg),
                             ("encoder_hidden_states", self.layout.encoder_arg)):
            if ours != theirs and ours in remaining:
                remaining[theirs] = remaining.pop(ours)
        args: list[Any] = []
        for param in list(_signature(block_class).parameters.values())[1:]:
            if len(args) >= positional:
                break
            if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
                args.append(remaining.pop(param.name))
            elif param.kind is param.VAR_POSITIONAL:
                args.extend(remaining.pop(param.name, ()))
                break
            else:
                break
        return tuple(args), remaining

    def read_output(self, output: Any, call: dict[str, Any]) -> dict[str, Any]:
        """A block's output as streams."""
        if isinstance(output, (tuple, list)):
            streams = {"hidden_states": output[self.layout.hidden_index]}
            if self.layout.encoder_index is not None:
                streams["encoder_hidden_states"] = output[self.layout.encoder_index]
            return streams
        return {"hidden_states": output}

    def check_output(self, block: torch.nn.Module, output: Any, inputs: dict[str, Any]) -> None:
        """Raise `UnsupportedModelError` unless `output` has this layout for a block given the streams
        `inputs`: each returned stream is a tensor of its input's shape (or None for a dropped encoder stream),
        and not the other input stream
        (a block returning (encoder, hidden) read as (hidden, encoder) fails here, not in the engine)."""
        where = {"hidden_states": self.layout.hidden_index, "encoder_hidden_states": self.layout.encoder_index}
        tuple_out = isinstance(output, (tuple, list))
        hidden = inputs.get("hidden_states")  # one text row for a whole batch comes back one per row
        hidden_rows = hidden.shape[0] if isinstance(hidden, torch.Tensor) else None
        for name in self.streams:
            given, index = inputs.get(name), where[name]
            if not isinstance(given, torch.Tensor):
                continue
            if tuple_out:
                got = output[index] if index < len(output) else None
            else:
                got = output if name == "hidden_states" else None
            other = inputs.get("encoder_hidden_states" if name == "hidden_states" else "hidden_states")
            problem = None
            if got is None and name == "encoder_hidden_states" and tuple_out and index < len(output):
                continue  # a last block that drops the text stream (SD3's context_pre_only block returns None)
            if not isinstance(got, torch.Tensor):
                problem = (f"no tensor at position {index} of its output" if tuple_out
                           else f"one tensor, not a tuple holding {name}")
            elif got.shape[1:] != given.shape[1:] or got.shape[0] not in (given.shape[0], hidden_rows):
                problem = f"a {name} of shape {tuple(got.shape)} for an input of shape {tuple(given.shape)}"
            elif got is other and other is not given:
                problem = f"the other input stream where {name} should be"
            elif name == "encoder_hidden_states" and _swapped(output, self.layout, inputs):
                problem = "hidden_states and encoder_hidden_states swapped (each is nearer the other's input)"
            if problem is not None:
                shape = (f"a tuple of {len(output)}" if tuple_out else "one tensor")
                raise UnsupportedModelError(
                    f"{type(block).__name__} does not return the layout cachepilot assumed for it (hidden_states at "
                    f"{self.layout.hidden_index}, encoder_hidden_states at {self.layout.encoder_index}): it "
                    f"returned {shape} with {problem}. Its block metadata is wrong; cachepilot refuses to cache "
                    f"{self.model_class} rather than mix up its streams")

    def make_output(self, streams: dict[str, Any]) -> Any:
        """What a block returns, built from streams (used by blocks that are passed through)."""
        if self.layout.encoder_index is None:
            return streams["hidden_states"]
        out = [None] * (max(self.layout.hidden_index, self.layout.encoder_index) + 1)
        out[self.layout.hidden_index] = streams["hidden_states"]
        out[self.layout.encoder_index] = streams.get("encoder_hidden_states")
        return tuple(out)


def _swapped(output: Any, layout: BlockLayout, inputs: dict[str, Any]) -> bool:
    """Streams of equal shapes cannot be told apart by shape: a residual block's output stays nearer its own
    input, so both returned streams being nearer the *other* input means the layout has them swapped (one
    host read, on the first call of a signature only)."""
    hidden_in, encoder_in = inputs["hidden_states"], inputs["encoder_hidden_states"]
    hidden_out, encoder_out = output[layout.hidden_index], output[layout.encoder_index]
    if hidden_in.shape != encoder_in.shape:
        return False
    def far(a, b):
        return (a.float() - b.float()).abs().mean()
    return bool(far(hidden_out, encoder_in) < far(hidden_out, hidden_in)) and bool(
        far(encoder_out, hidden_in) < far(encoder_out, encoder_in))


_SIGNATURES: dict[type, inspect.Signature] = {}
_STREAM_POSITIONS: dict[tuple[type, BlockLayout], dict[str, tuple[str, int | None]]] = {}


def _stream_positions(cls: type, layout: BlockLayout) -> dict[str, tuple[str, int | None]]:
    """Per stream of `layout`: (the block's argument name, its position without `self`, None if keyword-only)."""
    key = (cls, layout)
    if key not in _STREAM_POSITIONS:
        params = list(_signature(cls).parameters.values())[1:]
        names = {("hidden_states", layout.hidden_arg)}
        if layout.encoder_index is not None:
            names.add(("encoder_hidden_states", layout.encoder_arg))
        positions = {}
        for ours, theirs in sorted(names):
            position = next((i for i, p in enumerate(params) if p.name == theirs and p.kind in (
                p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)), None)
            positions[ours] = (theirs, position)
        _STREAM_POSITIONS[key] = positions
    return _STREAM_POSITIONS[key]


def _signature(cls: type) -> inspect.Signature:
    if cls not in _SIGNATURES:
        _SIGNATURES[cls] = inspect.signature(cls.forward)
    return _SIGNATURES[cls]


def block_lists(model: torch.nn.Module) -> dict[str, BlockLayout]:
    """The model's block lists, in registration order: direct `nn.ModuleList` children, non-empty, whose
    blocks all have the same known layout."""
    found = {}
    for name, child in model.named_children():
        if not isinstance(child, torch.nn.ModuleList) or not len(child):
            continue
        layouts = {block_layout(type(block)) for block in child}
        if len(layouts) == 1 and None not in layouts:
            found[name] = layouts.pop()
    return found


def known_block_classes() -> list[str]:
    """The block classes a stack can be made of: diffusers' registered ones and ours."""
    names = set(EXTRA_BLOCKS)
    if TransformerBlockRegistry is not None:
        TransformerBlockRegistry._register()
        names.update(cls.__name__ for cls in TransformerBlockRegistry._registry)
    return sorted(names)


def _unsupported(name: str, why: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"cachepilot cannot cache a {name}: {why}. Supported transformers: {', '.join(TESTED_MODELS)} "
        "(tested), and others with one list of blocks of a known class (" + ", ".join(known_block_classes()) +
        ") (pass the pipeline or its .transformer)"
    )


def get_adapter(model: torch.nn.Module) -> StackAdapter:
    """The adapter for `model`, discovered from its block lists; a clear error naming the supported
    classes otherwise."""
    name = type(model).__name__
    if name in REFUSED:
        raise _unsupported(name, REFUSED[name])
    found = block_lists(model)
    if LAST_LIST.get(name) in found:
        chosen = (LAST_LIST[name],)
    elif name in CHAINED_LISTS:
        chosen = CHAINED_LISTS[name]
        missing = [n for n in chosen if n not in found]
        if missing:
            raise _unsupported(name, f"its block lists {', '.join(missing)} are missing or of unknown blocks")
    elif len(found) == 1:
        chosen = tuple(found)
    elif not found:
        raise _unsupported(name, "it has no list of transformer blocks of a known block class")
    else:
        raise _unsupported(
            name, f"it has several block lists ({', '.join(found)}) and cachepilot chains lists only for "
                  f"models whose forward runs them back to back ({', '.join(CHAINED_LISTS)})")
    layouts = {found[n] for n in chosen}
    if len(layouts) != 1:
        raise _unsupported(name, f"its block lists {', '.join(chosen)} return their streams differently")
    return StackAdapter(name, chosen, layouts.pop(), native=name in PER_BLOCK_ARGUMENTS,
                        checks_handoff=name not in STREAM_REBUILT_BETWEEN_BLOCKS)


class _ExtraPositional(tuple):
    """A block's `*args`, in a call: each one an argument of its own (sliced like a top-level one)."""


def select_rows(value: Any, rows: torch.Tensor, batch_rows: int, nested: bool = False) -> Any:
    """Slice a block argument to the given batch rows when it carries a batch dimension.

    Tensors whose first dimension is the batch are sliced; so are a block's extra positional arguments
    (HunyuanVideo's), and, inside tuples and lists, tensors of 3 or more dimensions whose first is the
    batch (LTX's per-sample rotary embeddings; the (tokens, dim) tables of Flux, Qwen or HunyuanVideo are
    shared even when their token count happens to equal the batch). Dicts (attention kwargs) and scalars
    are shared by all rows and passed as they are.
    """
    if isinstance(value, torch.Tensor):
        if value.ndim >= (3 if nested else 1) and value.shape[0] == batch_rows:
            return value.index_select(0, rows)
        return value
    if isinstance(value, _ExtraPositional):
        return _ExtraPositional(select_rows(v, rows, batch_rows) for v in value)
    if type(value) in (tuple, list):
        return type(value)(select_rows(v, rows, batch_rows, nested=True) for v in value)
    return value


def supported_models() -> Sequence[str]:
    return TESTED_MODELS
