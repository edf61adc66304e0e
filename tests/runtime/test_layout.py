import torch

from cachepilot.core.history import ResidualHistory
from cachepilot.runtime.engine import _relative_l1
from cachepilot.core.layout import memory_order, rows_flat, zeros_stacked_like


def _transposed(*shape):
    """(B, tokens, dim) with the tokens innermost, as DiT's patch embedding lays out its stack input."""
    return torch.randn(shape[0], shape[2], shape[1]).transpose(1, 2)


def test_rows_flat_reads_a_transposed_stream_as_a_view_with_the_same_row_sums():
    a = _transposed(3, 5, 4)
    flat = rows_flat(a)
    assert flat.shape == (3, 20) and flat.data_ptr() == a.data_ptr() and flat.is_contiguous()
    torch.testing.assert_close(flat.abs().sum(1), a.abs().sum((1, 2)))
    assert memory_order(torch.zeros(2, 3, 4)) == [1, 2]


def test_relative_l1_is_per_row_mean_ratio_whatever_the_layout():
    a, b = _transposed(4, 6, 8), _transposed(4, 6, 8)
    expected = (a - b).abs().mean((1, 2)) / b.abs().mean((1, 2))
    torch.testing.assert_close(_relative_l1(a, b), expected)
    torch.testing.assert_close(_relative_l1(a.contiguous(), b.contiguous()), expected)


def test_stacked_buffer_entries_are_laid_out_like_the_tensor_they_hold():
    like = _transposed(2, 5, 3)
    buffer = zeros_stacked_like(like, 3)
    assert buffer.shape == (3, 2, 5, 3) and (buffer == 0).all()
    assert buffer[0].stride() == like.stride()
    buffer[1].copy_(like)
    assert torch.equal(buffer[1], like)


def test_history_of_a_transposed_stream_keeps_order_and_rows():
    history = ResidualHistory(3)
    residuals = [_transposed(4, 5, 6) for _ in range(4)]
    history.allocate(residuals[0])
    every = torch.arange(4)
    for step, residual in enumerate(residuals[:3]):
        history.update(every, step, residual)
    some = torch.tensor([1, 3])
    history.update(some, 3, residuals[3][some])
    for row in range(4):
        newest = [3, 2, 1] if row in (1, 3) else [2, 1, 0]
        for k, step in enumerate(newest):
            assert torch.equal(history.residuals[k, row], residuals[step][row])
            assert history.steps[k, row] == step
    assert history.count.tolist() == [3, 3, 3, 3]
