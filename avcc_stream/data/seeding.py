"""Seeds derived from names, so every random draw in the data area is reproducible.

A run seed alone is not enough: a sample's corruption must not depend on the order in which a
DataLoader happens to visit samples, or on how many workers it has. Deriving the seed from
(run seed, purpose, sample id) makes each sample's randomness a pure function of who it is.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed that depends on every part (order matters), stable across runs and Pythons.

    Python's `hash()` is salted per process, so it cannot be used here; BLAKE2b is.
    """
    text = "\x1f".join(str(part) for part in parts)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def rng_for(*parts: int | str) -> np.random.Generator:
    """A numpy Generator seeded by `derive_seed(*parts)`."""
    return np.random.default_rng(derive_seed(*parts))
