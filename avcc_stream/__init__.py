"""avcc-stream: audio-visual crowd counting for live cameras with sound (CC-AV / CC-V)."""

__version__ = "0.1.0"
