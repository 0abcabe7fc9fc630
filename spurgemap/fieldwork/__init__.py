"""From map to field work: survey plans, treatment zones and change maps from `spurgemap predict` outputs.

Entry points (each a pure function of parameters and inputs, writing one all-or-nothing folder):
`run_survey_plan(params, inputs) -> SurveyPlanResult`, `run_zones(params, inputs) -> ZonesResult`,
`run_change(params, inputs) -> ChangeResult`. The logic is numpy + shapely; file IO lives in
`spurgemap.geo.fieldwork_io`.
"""

from spurgemap.fieldwork.change import ChangeInputs, ChangeParams, ChangeResult, run_change
from spurgemap.fieldwork.survey_plan import SurveyPlanInputs, SurveyPlanParams, SurveyPlanResult, run_survey_plan
from spurgemap.fieldwork.zones import ZonesInputs, ZonesParams, ZonesResult, run_zones

__all__ = [
    "ChangeInputs", "ChangeParams", "ChangeResult", "SurveyPlanInputs", "SurveyPlanParams", "SurveyPlanResult",
    "ZonesInputs", "ZonesParams", "ZonesResult", "run_change", "run_survey_plan", "run_zones",
]
