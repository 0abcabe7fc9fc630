"""spurgemap: map leafy spurge from drone orthomosaics with few-shot, diffusion-augmented classifiers."""

__version__ = "0.1.0"
