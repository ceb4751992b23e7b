"""Datasets, ground truth, degradations and synthetic audio-visual crowds.

- `density`: head points -> density maps and patch counts (the model's targets).
- `datasets`: readers for DISCO, ShanghaiTech, UCF-QNRF and our plain layout; `open_dataset`.
- `degrade`: the DISCO paper's image degradations, seeded per sample.
- `training`: a torch Dataset that turns samples into model targets, with augmentation.
- `synth`: the project's own audio-visual crowd generator (stills and video).
"""
