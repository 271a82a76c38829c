"""The pruned sorting networks behind the coordinate-wise rules, checked exhaustively.

By the 0-1 principle a comparator network sorts every input iff it sorts every 0/1 input, so
all 2^n binary vectors prove the full network for n <= 14; a pruned network must put the right
values at the positions it was pruned for.
"""
import itertools

import numpy as np
import pytest

from fedsec import _core


def _apply(network, values: np.ndarray) -> np.ndarray:
    v = values.copy()
    for a, b in network:
        lo, hi = np.minimum(v[:, a], v[:, b]), np.maximum(v[:, a], v[:, b])
        v[:, a], v[:, b] = lo, hi
    return v


def _binary_inputs(n: int) -> np.ndarray:
    return np.array(list(itertools.product((0, 1), repeat=n)), dtype=np.int8)


@pytest.mark.parametrize("n", range(1, 15))
def test_full_network_sorts_every_binary_input(n):
    inputs = _binary_inputs(n)
    assert np.array_equal(_apply(_core.sorting_network(n, 0, n), inputs), np.sort(inputs, axis=1))


@pytest.mark.parametrize("n", [2, 3, 5, 8, 11, 13])
@pytest.mark.parametrize("part", ["median", "ends", "middle"])
def test_pruned_network_is_right_where_it_was_pruned_for(n, part):
    first, last = {"median": ((n - 1) // 2, n // 2 + 1), "ends": (0, 1), "middle": (n // 4, n - n // 4)}[part]
    inputs = _binary_inputs(n)
    pruned = _core.sorting_network(n, first, last)
    assert len(pruned) <= len(_core.sorting_network(n, 0, n))
    got = _apply(pruned, inputs)[:, first:last]
    assert np.array_equal(got, np.sort(inputs, axis=1)[:, first:last])


def test_pruning_removes_comparators_for_a_median():
    assert len(_core.sorting_network(50, 24, 26)) < len(_core.sorting_network(50, 0, 50))


@pytest.mark.parametrize("first,last", [(-1, 3), (2, 2), (0, 6)])
def test_bad_ranges_are_rejected(first, last):
    with pytest.raises(ValueError):
        _core.sorting_network(5, first, last)


@pytest.mark.parametrize("n,k", [(3, 1), (7, 2), (10, 1), (12, 5), (13, 0)])
def test_trimmed_mean_network_keeps_the_middle(n, k):
    """The middle positions must hold exactly the kept values, in any order (the network is the
    smaller of two valid prunings: the k smallest and largest in place, or the middle sorted)."""
    inputs = _binary_inputs(n)
    net = _core.select_network(n, _core.SelectOp.TRIMMED_MEAN, k)
    got, want = _apply(net, inputs), np.sort(inputs, axis=1)
    assert np.array_equal(np.sort(got[:, k:n - k], axis=1), want[:, k:n - k])
    assert len(net) <= len(_core.sorting_network(n, k, n - k)) if k else net == []
    if k == 1 and n >= 10:  # few ends to place: clearly fewer comparators than sorting
        assert len(net) < len(_core.sorting_network(n, k, n - k))


def test_median_network_sorts_the_middle():
    inputs = _binary_inputs(11)
    got = _apply(_core.select_network(11, _core.SelectOp.MEDIAN, 0), inputs)
    assert np.array_equal(got[:, 5], np.sort(inputs, axis=1)[:, 5])


def test_the_python_layer_names_the_extensions_codes():
    """The codes live in the extension (csrc/bindings.cpp); Python only names them."""
    from fedsec.aggregation.backends import SelectOp
    from fedsec.aggregation.backends.native import dtype_name
    from fedsec.aggregation.updates import FLOAT_NUMPY_DTYPES, FLOAT_TORCH_DTYPES

    assert [op.name for op in SelectOp] == list(_core.SelectOp.__members__)
    accepted = {dtype_name(dt) for dt in (*FLOAT_TORCH_DTYPES, *FLOAT_NUMPY_DTYPES)}
    assert accepted == set(_core.DType.__members__)
    with pytest.raises(ValueError, match="dtype must be a DType"):
        _core.combine([1], [1.0], 0, 0.0, 1, _core.DType(7), 1)
