"""The families beyond tiny_models.FAMILIES, on tiny perturbed configs (more_families): always-compute
bit-exact, fixed:2 + taylor:1 computes half the steps and changes the output, a repeat is identical,
disable restores the plain model; refused families name their reason; a block whose metadata lies about
its output layout is a clear error before anything is cached."""

import pytest
import torch

from cachepilot.runtime.adapters import UnsupportedModelError, get_adapter
from cachepilot.runtime.families import REFUSED

from .more_families import BUILDERS, CHECKS, IMG2IMG, IMG2IMG_CHECKS, build, check_family, check_img2img


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("family", BUILDERS)
def test_family_is_cached_exactly(family):
    result = check_family(*build(family), family=family)
    assert result.checks == dict.fromkeys(CHECKS, True), result.checks
    assert result.passed


@pytest.mark.parametrize("family", ["dit", "flux", "wan"])
def test_tiny_models_family_passes_the_table_checks(family):
    """docs/families.md runs `check_family` on tiny_models' families too (their own tests check them otherwise):
    a few of them here, the failed-call recovery column included."""
    from .more_families import build_tiny_models_family

    result = check_family(*build_tiny_models_family(family), family=family)
    assert result.checks == dict.fromkeys(CHECKS, True), result.checks


@pytest.mark.parametrize("family", IMG2IMG)
def test_img2img_pipeline_is_cached_exactly(family, tmp_path):
    assert check_img2img(family, tmp_path) == dict.fromkeys(IMG2IMG_CHECKS, True)


STACKS = {  # the lists each family's cached stack is made of (LAST_LIST: the earlier lists run every step)
    "bria": ("transformer_blocks", "single_transformer_blocks"),
    "ovis-image": ("transformer_blocks", "single_transformer_blocks"),
    "hunyuanimage-2.1": ("transformer_blocks", "single_transformer_blocks"),
    "hunyuanvideo-framepack": ("transformer_blocks", "single_transformer_blocks"),
    "flux2": ("single_transformer_blocks",), "auraflow": ("single_transformer_blocks",),
    "chroma": ("single_transformer_blocks",), "hidream": ("single_stream_blocks",),
    "hunyuandit": ("blocks",),
    "lumina2": ("layers",), "z-image": ("layers",), "skyreels-v2": ("blocks",), "omnigen": ("layers",),
    "prx": ("blocks",),
}


@pytest.mark.parametrize("family", BUILDERS)
def test_stack_is_the_expected_lists(family):
    model, _, _ = build(family, batch=1)
    assert get_adapter(model).block_lists == STACKS.get(family, ("transformer_blocks",))


def test_bria_without_the_override_is_a_clear_error_before_caching(monkeypatch):
    """diffusers registers BriaTransformerBlock as returning hidden_states first; it returns
    (encoder_hidden_states, hidden_states). Trusting the registry used to fail deep in the engine."""
    import cachepilot
    from cachepilot.runtime import families

    from .more_families import run

    model, x, step = build("bria")
    monkeypatch.delitem(families.LAYOUT_OVERRIDES, "BriaTransformerBlock")
    monkeypatch.delitem(families.CHAINED_LISTS, "BriaTransformer2DModel")
    monkeypatch.delitem(families.EXTRA_BLOCKS, "BriaSingleTransformerBlock")
    cachepilot.enable(model, "fixed:2", predictor="taylor:1", num_inference_steps=4)
    with pytest.raises(UnsupportedModelError, match=r"BriaTransformerBlock does not return the layout .* shape"):
        run(model, x, step)
    assert cachepilot.last_stats(model) is None  # nothing was cached


class _LyingBlock(torch.nn.Module):
    """A residual block returning (encoder_hidden_states, hidden_states)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, hidden_states, encoder_hidden_states):
        return encoder_hidden_states + 0.1, hidden_states + 0.1 * self.proj(hidden_states)


class _LyingModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_LyingBlock(), _LyingBlock()])

    def forward(self, hidden_states, encoder_hidden_states):
        for block in self.blocks:
            encoder_hidden_states, hidden_states = block(hidden_states, encoder_hidden_states)
        return hidden_states


@pytest.mark.parametrize("tokens", [(4, 6), (4, 4)])  # text and image token counts differ / are equal
@torch.no_grad()
def test_a_block_whose_metadata_lies_is_refused_naming_it(monkeypatch, tokens):
    from cachepilot.runtime import families
    from cachepilot.runtime.families import BlockLayout
    from cachepilot.runtime.hooks import apply_cache
    from cachepilot.policies.baselines import AlwaysCompute
    from cachepilot.predictors.taylor import Reuse

    torch.manual_seed(0)
    model = _LyingModel().eval()
    hidden, context = torch.randn(1, tokens[0], 8), torch.randn(1, tokens[1], 8)
    monkeypatch.setitem(families.EXTRA_BLOCKS, "_LyingBlock", BlockLayout(0, 1))  # wrong: it is (1, 0)
    apply_cache(model, AlwaysCompute(), Reuse(), num_inference_steps=2)
    with pytest.raises(UnsupportedModelError, match=r"_LyingBlock does not return the layout"):
        model(hidden, context)  # equal token counts: found by which input each returned stream is nearer
    monkeypatch.setitem(families.EXTRA_BLOCKS, "_LyingBlock", BlockLayout(1, 0))  # the truth
    apply_cache(model, AlwaysCompute(), Reuse(), num_inference_steps=2)
    reference = _LyingModel.forward(model, hidden, context)
    assert torch.equal(model(hidden, context), reference)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_families_name_their_reason(name):
    fake = type(name, (torch.nn.Module,), {})()
    with pytest.raises(UnsupportedModelError, match=f"cannot cache a {name}: {REFUSED[name][:30]}"):
        get_adapter(fake)


def test_every_built_family_is_listed_as_tested():
    from cachepilot.runtime.families import TESTED_MODELS

    for family in BUILDERS:
        model, _, _ = build(family, batch=1)
        assert type(model).__name__ in TESTED_MODELS


def test_per_block_argument_stacks_compute_every_row_of_a_mixed_step():
    """Chroma's blocks each get their own modulation, so the model runs them itself: a step where one sample
    computes computes both, and is recorded so (the compute fraction stays honest)."""
    import cachepilot
    from cachepilot.core.actions import Action
    from cachepilot.policies.baselines import Schedule
    from cachepilot.predictors.taylor import Taylor
    from cachepilot.runtime.hooks import apply_cache

    from .more_families import run

    model, x, step = build("chroma")
    assert get_adapter(model).native
    mask = torch.tensor([[1, 0, 0, 1], [1, 0, 1, 1]], dtype=torch.bool)  # step 1: both skip; step 2: mixed
    apply_cache(model, Schedule(mask), Taylor(1), num_inference_steps=4)
    out = run(model, x, step)
    computed = cachepilot.last_stats(model).decisions == Action.COMPUTE
    assert computed.tolist() == [[True, True], [False, False], [True, True], [True, True]]
    assert torch.isfinite(out).all()


def test_wan22_pipeline_passes_the_table_checks():
    """The Wan 2.2 row of docs/families.md: both experts cached through whole pipeline calls, a call interrupted
    by a step-end callback leaves nothing that changes the next one."""
    from .more_families import FAILED_CALL, check_wan22_pipeline

    result = check_wan22_pipeline()
    assert result.checks == dict.fromkeys([*CHECKS[:4], FAILED_CALL], True), result.checks
    assert result.passed
