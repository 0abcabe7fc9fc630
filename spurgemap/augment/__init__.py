"""`spurgemap augment`: DA-Fusion class tokens + SDEdit and the other generative augmentations.

Entry points live in `augment.stage`; this face re-exports nothing so that readers of the
synthetic-set format (`augment.manifest`) do not pay for the generation code.
"""
