"""A corpus of broken config files: each must fail with its expected message at its line.

Every file in broken_configs/ starts with two comments:
    # expect-line: N          the 1-based line the error must point at
    # expect: FRAGMENT        text the error message must contain
"""

from __future__ import annotations

from pathlib import Path

import pytest

from avcc_stream.config.loader import ConfigError, load_config

CORPUS = Path(__file__).parent / "broken_configs"
CASES = sorted(CORPUS.glob("*.yaml"))


def expectations(path: Path) -> tuple[int, str]:
    header = dict(
        line[2:].split(": ", 1) for line in path.read_text().splitlines()[:2] if line.startswith("# expect")
    )
    return int(header["expect-line"]), header["expect"]


def test_the_corpus_covers_the_required_mistakes() -> None:
    names = {path.stem for path in CASES}
    assert len(CASES) >= 10
    assert {"syntax_error", "duplicate_key", "unknown_key_top", "unknown_key_nested", "wrong_type",
            "negative_batch", "camera_name_plus", "camera_name_hash", "camera_name_slash",
            "password_without_username", "polygon_two_points", "hysteresis_over_threshold",
            "missing_env_var"} <= names


@pytest.mark.parametrize("path", CASES, ids=[path.stem for path in CASES])
def test_broken_config_names_file_line_key_and_expectation(path: Path) -> None:
    line, fragment = expectations(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    issues = caught.value.issues
    matching = [issue for issue in issues if fragment in str(issue)]
    assert matching, f"no issue contains {fragment!r}; got:\n{caught.value}"
    assert matching[0].line == line, f"expected line {line}, got {matching[0]}"
    assert matching[0].file == str(path)
    assert str(matching[0]).startswith(f"{path}:{line}:")
