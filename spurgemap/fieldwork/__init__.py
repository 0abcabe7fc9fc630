"""From map to field work: survey plans, treatment zones and change maps from `spurgemap predict` outputs.

Entry points (each a pure function of the config and inputs, writing one all-or-nothing folder):
`run_survey_plan(config, inputs) -> SurveyPlanResult`, `run_zones(config, inputs) -> ZonesResult`,
`run_change(config, inputs) -> ChangeResult`; settings are the config's `survey_plan`, `zones` and
`change` sections. The logic is numpy + shapely; file IO lives in `spurgemap.geo.fieldwork_io`,
the map folder's layout in `spurgemap.predict.mapset`.
"""

from spurgemap.fieldwork.change import ChangeInputs, ChangeResult, run_change
from spurgemap.fieldwork.survey_plan import SurveyPlanInputs, SurveyPlanResult, run_survey_plan
from spurgemap.fieldwork.zones import ZonesInputs, ZonesResult, run_zones

__all__ = [
    "ChangeInputs", "ChangeResult", "SurveyPlanInputs", "SurveyPlanResult",
    "ZonesInputs", "ZonesResult", "run_change", "run_survey_plan", "run_zones",
]
