"""The project's own audio-visual crowds: stills (`avcc-stream synth`) and clips (`synth-video`).

- `scene`: camera and perspective ground plane, backdrop, lighting, scene objects
- `people`: crowd layouts, appearance, drawing in depth order, which heads are visible
- `raster`: anti-aliased convex shapes with a label buffer
- `audio`: crowd sound whose texture follows the count, ambient sound and microphone
- `sample`: one still sample; `writer`: a dataset on disk; `video`: a clip over time
"""
