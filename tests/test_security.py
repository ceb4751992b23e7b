import pytest

from avcc_stream.security import redact_url, validate_camera_name


@pytest.mark.parametrize("name", ["gate-1", "Hall_A", "cam.07", "x"])
def test_safe_camera_names_are_accepted(name: str) -> None:
    assert validate_camera_name(name) == name


@pytest.mark.parametrize("name", ["a+b", "a#", "a/b", "a:b", "", "has space", "-lead", "x" * 65])
def test_camera_names_that_would_break_topics_or_keys_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="invalid camera name"):
        validate_camera_name(name)


def test_redact_url_hides_credentials_and_query_values() -> None:
    redacted = redact_url("rtsp://admin:hunter2@10.0.0.5:554/stream1?token=abc&x=1")
    assert "hunter2" not in redacted and "admin" not in redacted and "abc" not in redacted
    assert redacted == "rtsp://***@10.0.0.5:554/stream1?token=***&x=***"


def test_redact_url_leaves_plain_urls_alone() -> None:
    assert redact_url("rtsp://127.0.0.1:8554/cam") == "rtsp://127.0.0.1:8554/cam"
