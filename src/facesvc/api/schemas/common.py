"""Shapes every area uses: sizes, boxes, model references, and text a database can store."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from facesvc.db import models as db
from facesvc.inference.types import Box

Point = tuple[float, float]
Point3 = tuple[float, float, float]


def _rounded_to(digits: int) -> AfterValidator:
    """Rounds a float as the model is built, so no response sends more digits than this."""

    def rounded(value: float) -> float:
        return round(value, digits)

    return AfterValidator(rounded)


# A coordinate in image pixels: a hundredth of a pixel, whether detected now or stored.
Pixels = Annotated[float, _rounded_to(2)]
# A similarity, distance or probability: six digits (more is float noise). Not a threshold (the
# exact decision) nor a false-match rate (one of 1e-9 would read as 0).
Score = Annotated[float, _rounded_to(6)]


class ImageSize(BaseModel):
    width: int = Field(examples=[640])
    height: int = Field(examples=[480])


class BoxOut(BaseModel):
    """Face box in original image pixels (x, y is the top-left corner)."""

    x: Pixels = Field(examples=[212.4])
    y: Pixels = Field(examples=[96.0])
    width: Pixels = Field(examples=[141.7])
    height: Pixels = Field(examples=[141.7])

    @classmethod
    def of(cls, box: Box) -> BoxOut:
        return cls(x=box.x, y=box.y, width=box.width, height=box.height)

    @classmethod
    def of_stored(cls, face: db.Face) -> BoxOut:
        """The box stored with an enrolled face (stored unrounded, answered like any box)."""
        return cls(x=face.box_x, y=face.box_y, width=face.box_width, height=face.box_height)


Item = TypeVar("Item")


class Page(BaseModel, Generic[Item]):
    # One page of a list: `items` from `offset`, at most `limit` of them, out of `total`.
    # A subclass per list (UserPage(Page[UserOut])) names its component in the OpenAPI
    # document and may document a field again; a docstring here would describe every page.

    items: list[Item]
    total: int
    limit: int
    offset: int


class ModelRef(BaseModel):
    name: str = Field(examples=["facenet"])
    version: str = Field(examples=["20170512-110547-keras-frozen-1"])


def storable_text(value: str | None) -> str | None:
    """``storable`` for optional text (None passes)."""
    return None if value is None else storable(value)


def storable(value: str) -> str:
    """Text every database can store: no control characters (NUL breaks PostgreSQL) and no
    lone surrogates (not valid UTF-8)."""
    for char in value:
        code = ord(char)
        if code < 0x20 or code == 0x7F or 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"contains an unsupported character U+{code:04X}")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(storable),
]
