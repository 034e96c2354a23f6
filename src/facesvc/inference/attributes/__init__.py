"""Face attributes: age, gender and expression networks, and head pose from the mesh.

``models`` holds the networks (what runs on a runner's thread) and what their outputs mean;
``chips`` the crops each network was trained on.
"""

from __future__ import annotations

from typing import Literal, get_args

Attribute = Literal["age", "gender", "expression", "pose"]
ATTRIBUTES: tuple[Attribute, ...] = get_args(Attribute)
# The attributes computed by a network of their own (pose is read from the face mesh).
NETWORK_ATTRIBUTES: tuple[Attribute, ...] = ("age", "gender", "expression")
