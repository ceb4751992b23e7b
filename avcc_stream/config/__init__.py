"""avcc-stream configuration: one pydantic model per area, loaded from one YAML file.

    from avcc_stream.config import load_config, effective_camera_config, ConfigError
    app = load_config("configs/example.yaml")          # AppConfig, or ConfigError (file:line: key: why)
    cam = effective_camera_config(app, "gate1")        # CameraConfig with global defaults merged in
"""

from avcc_stream.config.alerts import AlertSettings, SurgeSettings
from avcc_stream.config.app import AppConfig, effective_camera_config
from avcc_stream.config.camera import AlignSettings, CameraConfig, CameraDefaults, ReconnectSettings
from avcc_stream.config.common import TlsSettings
from avcc_stream.config.inference import InferenceSettings
from avcc_stream.config.loader import ConfigError, ConfigIssue, load_config, parse_config
from avcc_stream.config.logs import LoggingSettings
from avcc_stream.config.model import ModelSettings
from avcc_stream.config.mqtt import MqttSettings
from avcc_stream.config.outputs import ConsoleSettings, HotspotSettings
from avcc_stream.config.redis import RedisSettings
from avcc_stream.config.service import HomeAssistantSettings, MetricsSettings, SpoolSettings
from avcc_stream.config.zones import ZoneSettings

__all__ = [
    "AlertSettings", "AlignSettings", "AppConfig", "CameraConfig", "CameraDefaults", "ConfigError",
    "ConfigIssue", "ConsoleSettings", "HomeAssistantSettings", "HotspotSettings", "InferenceSettings",
    "LoggingSettings", "MetricsSettings", "ModelSettings", "MqttSettings", "RedisSettings",
    "ReconnectSettings", "SpoolSettings", "SurgeSettings", "TlsSettings", "ZoneSettings",
    "effective_camera_config", "load_config", "parse_config",
]
