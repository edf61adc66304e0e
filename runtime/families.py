"""Per-family facts the block registry does not hold: which block lists form a transformer's cached stack,
block layouts diffusers does not register (or registers wrongly), and families refused with their reason.

Entries are keyed by class *name* (no import of models a diffusers version may lack). Each entry here is
checked end to end on a tiny, perturbed configuration by tests/runtime/test_families.py or
tests/runtime/test_more_families.py (always-compute bit-exact, a cached schedule runs); docs/families.md is
the table those tests write.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BlockLayout:
    """How a block class takes and returns the streams.
    hidden_index / encoder_index: where `hidden_states` / `encoder_hidden_states` sit in the block's tuple
    output; encoder_index None: the block returns `hidden_states` alone (one tensor).
    hidden_arg / encoder_arg: the block's names for them (the engine always calls them `hidden_states`
    and `encoder_hidden_states`)."""

    hidden_index: int = 0
    encoder_index: int | None = None
    hidden_arg: str = "hidden_states"
    encoder_arg: str = "encoder_hidden_states"


# Registry entries known to be wrong in diffusers 0.42 (they win over the registry). Bria's blocks return
# (encoder_hidden_states, hidden_states), not hidden_states first; Z-Image's block calls its stream `x`.
LAYOUT_OVERRIDES: dict[str, BlockLayout] = {
    "BriaTransformerBlock": BlockLayout(1, 0),
    "ZImageTransformerBlock": BlockLayout(0, None, hidden_arg="x"),
}

# Block classes diffusers does not register.
EXTRA_BLOCKS: dict[str, BlockLayout] = {
    "SanaTransformerBlock": BlockLayout(0, None),
    "BriaSingleTransformerBlock": BlockLayout(1, 0),
    "OvisImageTransformerBlock": BlockLayout(1, 0),
    "OvisImageSingleTransformerBlock": BlockLayout(1, 0),
    "Lumina2TransformerBlock": BlockLayout(0, None),
    "AuraFlowJointTransformerBlock": BlockLayout(1, 0),
    "AuraFlowSingleTransformerBlock": BlockLayout(0, None),
    "CosmosTransformerBlock": BlockLayout(0, None),
    "AllegroTransformerBlock": BlockLayout(0, None),
    "EasyAnimateTransformerBlock": BlockLayout(0, 1),
    "SkyReelsV2TransformerBlock": BlockLayout(0, None),
    "SanaVideoTransformerBlock": BlockLayout(0, None),
    "PRXBlock": BlockLayout(0, None),
    "OmniGenBlock": BlockLayout(0, None),
    "ChromaTransformerBlock": BlockLayout(1, 0),
    "ChromaSingleTransformerBlock": BlockLayout(0, None),
    "HiDreamBlock": BlockLayout(0, None),
    "HunyuanDiTBlock": BlockLayout(0, None),  # the cached single-stream list's layout (the double list runs)
}

# Model classes whose block lists run back to back in `forward`, streams passed straight from one list to
# the next with the same arguments (at run time every pass-through block also checks it gets the very
# tensor the block before returned). Flux's single blocks take separate streams there (a diffusers whose
# single blocks take the concatenated stream registers another layout, and is refused); HunyuanVideo,
# its Framepack variant and HunyuanImage call both lists with the same positional arguments.
CHAINED_LISTS: dict[str, tuple[str, ...]] = {
    "FluxTransformer2DModel": ("transformer_blocks", "single_transformer_blocks"),
    "HunyuanVideoTransformer3DModel": ("transformer_blocks", "single_transformer_blocks"),
    "HunyuanVideoFramepackTransformer3DModel": ("transformer_blocks", "single_transformer_blocks"),
    "HunyuanImageTransformer2DModel": ("transformer_blocks", "single_transformer_blocks"),
    "BriaTransformer2DModel": ("transformer_blocks", "single_transformer_blocks"),
    "OvisImageTransformer2DModel": ("transformer_blocks", "single_transformer_blocks"),
}

# Model classes with several lists where only the last one can be cached: the earlier lists run every step
# (small refiners, or double-stream blocks whose two streams are concatenated before the last list, with
# arguments the last list does not share), and the last list carries the one stream the model reads after
# it. Caching them together would need the engine to see the later lists' arguments before they are made.
LAST_LIST: dict[str, str] = {
    "ZImageTransformer2DModel": "layers",  # noise_refiner, context_refiner (and siglip_refiner) run first
    "Lumina2Transformer2DModel": "layers",  # noise_refiner, context_refiner run first
    "AuraFlowTransformer2DModel": "single_transformer_blocks",  # the joint blocks run first
    "Flux2Transformer2DModel": "single_transformer_blocks",  # the double-stream blocks run first
    "ChromaTransformer2DModel": "single_transformer_blocks",  # the double-stream blocks run first
    "HiDreamImageTransformer2DModel": "single_stream_blocks",  # the double-stream blocks run first
}

# Model classes whose blocks each get their own arguments (Chroma slices its modulation per block, HiDream
# gives each block its own Llama layer's text states, HunyuanDiT its own skip connection): the
# engine cannot call the stack's blocks the way the model called the first, so when anyone computes the
# model runs the blocks itself, on every row, and a step mixing computing and skipping samples computes
# them all (recorded so: per-sample decisions save nothing there, per-batch ones do).
PER_BLOCK_ARGUMENTS: frozenset[str] = frozenset({
    "ChromaTransformer2DModel", "HiDreamImageTransformer2DModel",
    "HunyuanDiT2DModel",  # its later blocks take long skip connections from earlier blocks' outputs
})

# Of those, model classes that rebuild the stream between blocks and undo it after (HiDream appends each
# block's own Llama text states to the stream and cuts them off after the block): a skipped step's cached
# output still comes out right, but the stream a block gets is not the tensor the block before returned,
# so the hooks do not check that hand-off (they do for every other stack, to catch ControlNet residuals).
STREAM_REBUILT_BETWEEN_BLOCKS: frozenset[str] = frozenset({"HiDreamImageTransformer2DModel"})

# Families the engine cannot cache as one stack of identically called blocks, with the reason.
REFUSED: dict[str, str] = {
    "LatteTransformer3DModel": "its spatial and temporal blocks alternate with reshapes (and, after the first, "
                               "a temporal position embedding) between them, and its stream's rows are frames",
    "LTX2VideoTransformer3DModel": "its blocks carry a video and an audio stream, both read after the stack; "
                                   "the engine caches one stream's residual",
    "ConsisIDTransformer3DModel": "face features are added to the stream between blocks",
    "WanAnimateTransformer3DModel": "face-adapter outputs are added to the stream between blocks",
}

# Families tested end to end (tests/runtime/test_families.py, test_more_families.py); others with known
# blocks work the same way.
TESTED_MODELS: tuple[str, ...] = (
    "AllegroTransformer3DModel", "AuraFlowTransformer2DModel", "BriaTransformer2DModel",
    "ChromaTransformer2DModel", "CogVideoXTransformer3DModel", "CosmosTransformer3DModel", "DiTTransformer2DModel",
    "EasyAnimateTransformer3DModel", "Flux2Transformer2DModel", "FluxTransformer2DModel",
    "HiDreamImageTransformer2DModel", "HunyuanDiT2DModel", "HunyuanImageTransformer2DModel",
    "HunyuanVideoFramepackTransformer3DModel", "HunyuanVideoTransformer3DModel",
    "LTXVideoTransformer3DModel", "Lumina2Transformer2DModel", "OmniGenTransformer2DModel",
    "OvisImageTransformer2DModel", "PRXTransformer2DModel", "PixArtTransformer2DModel",
    "QwenImageTransformer2DModel", "SD3Transformer2DModel", "SanaTransformer2DModel",
    "SanaVideoTransformer3DModel", "SkyReelsV2Transformer3DModel", "WanTransformer3DModel",
    "ZImageTransformer2DModel",
)
