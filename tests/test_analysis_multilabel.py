"""Multi-label analysis on hand-computed examples (bitmasks: bit j = label j)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelflip.analysis.multilabel import bit_flips, bit_success_rate, changed_bits, label_swaps
from labelflip.errors import LabelflipError


def test_changed_bits_by_hand():
    # 0b0101 vs 0b0110: bits 0 and 1 differ; 0 vs 0b1111: four; equal: none
    assert changed_bits([5, 0, 9], [6, 15, 9], 4).tolist() == [2, 4, 0]


def test_bit_flips_by_hand():
    clean = [0b011, 0b100, 0b000]
    adv = [0b110, 0b100, 0b001]
    on, off = bit_flips(clean, adv, 3)
    # sample 0: bit 0 off, bit 2 on; sample 1: unchanged; sample 2: bit 0 on
    assert on.tolist() == [1, 0, 1]
    assert off.tolist() == [1, 0, 0]


def test_bit_success_rate_by_hand():
    source = [0b0000, 0b0011, 0b0101]
    target = [0b0011, 0b0000, 0b0101]  # asks 2 bits, 2 bits, none (left out)
    adv = [0b0001, 0b0000, 0b1111]  # reaches 1 of 2, 2 of 2
    assert bit_success_rate(source, adv, target, 4) == pytest.approx(0.75)
    assert math.isnan(bit_success_rate([1], [1], [1], 2))


def test_bit_success_rate_ignores_collateral_changes():
    # target asks bit 0 on; adv sets bit 0 and also bit 3 (not asked): bASR 1, not a success
    assert bit_success_rate([0], [0b1001], [0b0001], 4) == 1.0


def test_bad_inputs():
    with pytest.raises(LabelflipError, match="outside"):
        bit_flips([16], [0], 4)
    with pytest.raises(LabelflipError, match="integer"):
        changed_bits(np.array([0.5]), np.array([1]), 2)
    with pytest.raises(LabelflipError, match="same length"):
        bit_flips([1, 2], [1], 2)


def test_label_swaps_by_hand():
    clean = [0b0011, 0b0100, 0b0001, 0b0001]
    adv = [0b0110, 0b1000, 0b0001, 0b0011]
    # s0: 0 off, 2 on -> (0, 2); s1: 2 off, 3 on -> (2, 3); s2: nothing; s3: only 1 on (no swap)
    s = label_swaps(clean, adv, 4)
    expected = np.zeros((4, 4), dtype=np.int64)
    expected[0, 2] = expected[2, 3] = 1
    np.testing.assert_array_equal(s, expected)
    # two off and one on: both pairs count
    np.testing.assert_array_equal(
        label_swaps([0b011], [0b100], 3), [[0, 0, 1], [0, 0, 1], [0, 0, 0]]
    )
    only = np.zeros((4, 4), dtype=np.int64)
    only[2, 3] = 1
    np.testing.assert_array_equal(label_swaps(clean, adv, 4, mask=[False, True, True, True]), only)
