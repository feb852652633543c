"""The settings of the target strategies, declared once (:mod:`labelflip._settings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from labelflip._settings import Settings, setting
from labelflip.errors import LabelflipError


@dataclass(frozen=True)
class NoSettings(Settings):
    """Settings of the strategies without any (``random``, ``easiest``, ``hardest``)."""


def _check_distance_name(strategy: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise LabelflipError(
            f"{strategy}: distance must be the name of a class-distance matrix, got {value!r}"
        )


@dataclass(frozen=True)
class DistanceSettings(Settings):
    """Settings of ``nearest`` / ``farthest``: ``distance`` names the
    class-distance matrix the caller computes and passes as ``distances``
    (the strategy itself only receives the matrix)."""

    owner: ClassVar[str] = "nearest/farthest"

    distance: str = setting("perceptual", doc="the class-distance matrix's name")

    def check(self) -> None:
        _check_distance_name(self.owner, self.distance)


@dataclass(frozen=True)
class MappingSettings(Settings):
    """Settings of ``mapping``: source class -> target class. Keys are class
    indices (as strings, as in TOML, or integers) or class names; values are
    target indices or class names."""

    owner: ClassVar[str] = "mapping"

    mapping: dict[str, int | str] = setting(
        default_factory=dict, doc="source class -> target class"
    )

    def check(self) -> None:
        if not self.mapping:
            raise LabelflipError(
                "mapping: setting 'mapping' must be a non-empty table of "
                "source class -> target class"
            )
        for key, value in self.mapping.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise LabelflipError(
                    f"mapping: source classes must be class names or indices, got {key!r}"
                )
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise LabelflipError(
                    f"mapping: target of {key!r} must be a class name or index, got {value!r}"
                )


@dataclass(frozen=True)
class ShiftSettings(Settings):
    """Settings of ``next``: the target is ``(source + shift) mod k``."""

    owner: ClassVar[str] = "next"

    shift: int = setting(1, doc="the target is (source + shift) mod k")


@dataclass(frozen=True)
class LabelFoolTargetSettings(Settings):
    """Settings of the ``labelfool`` strategy (LabelFool §III-A): ``delta1``
    is the confidence threshold of eq. 6, ``delta2`` the sampling threshold
    of eq. 3, ``distance`` names the class-distance matrix (perceptual:
    Hausdorff over cosine distances of pre-trained features in the paper)."""

    owner: ClassVar[str] = "labelfool"

    delta1: float = setting(0.8, ge=0.0, le=1.0, doc="confidence threshold (eq. 6)")
    delta2: float = setting(0.01, ge=0.0, le=1.0, doc="sampling threshold (eq. 3)")
    distance: str = setting("perceptual", doc="the class-distance matrix's name")

    def check(self) -> None:
        _check_distance_name("labelfool", self.distance)


@dataclass(frozen=True)
class FlipBitsSettings(Settings):
    """Settings of ``flip-bits``: ``bits`` labels of the predicted label
    vector are flipped; a negative value counts from the number of labels
    (``-1``: all labels but one). Checked against the model's number of
    labels when targets are chosen."""

    owner: ClassVar[str] = "flip-bits"

    bits: int = setting(1, doc="labels flipped (negative: counted from the number of labels)")

    def check(self) -> None:
        if self.bits == 0:
            raise LabelflipError(
                "flip-bits: bits must not be 0 (a target equal to the prediction makes no attack)"
            )
