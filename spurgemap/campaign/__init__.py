"""Campaigns: many orthomosaics and evaluate grids as Dask tasks (`run_campaign`, engines in engine.py)."""

from spurgemap.campaign.stage import CampaignInputs, CampaignResult, expand_orthos, run_campaign

__all__ = ["CampaignInputs", "CampaignResult", "expand_orthos", "run_campaign"]
