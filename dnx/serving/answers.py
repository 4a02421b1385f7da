"""What a classification answer is: the labelled classes of one image, parsed from Triton's reply."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """One class of a top-k answer, as the server labelled it."""

    score: float
    index: int
    label: str


@dataclass
class ImageResult:
    """The answer for one image file: ``predictions`` (best first) or an ``error`` message."""

    path: str
    predictions: list[Prediction] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict:
        return {
            "file": self.path,
            "predictions": [{"rank": i + 1, "score": p.score, "index": p.index, "label": p.label} for i, p in enumerate(self.predictions)],
            "error": self.error,
        }


def parse_classification(entry: bytes | str) -> Prediction:
    """Parse one ``"value:index:label"`` entry of Triton's classification reply."""
    text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
    value, index, *label = text.split(":", 2)
    return Prediction(float(value), int(index), label[0] if label else "")
