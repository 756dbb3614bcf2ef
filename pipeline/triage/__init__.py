"""Label triage: the model's map against OpenStreetMap, as review tasks for people.

- :mod:`~pipeline.triage.objects`: the farms the model found (the map's, else predict's), in
  one schema;
- :mod:`~pipeline.triage.overlap`: how objects and labels cover each other (IoU, shares);
- :mod:`~pipeline.triage.evidence`: attribution shares and confirmed cues per object and label;
- :mod:`~pipeline.triage.ranking`: candidates (found, not in OSM) by an evidence score, and
  suspect labels (in OSM, not found or found from their surroundings) with a reason;
- :mod:`~pipeline.triage.review`: the review tables' columns and the GeoJSON of review tasks;
- :mod:`~pipeline.triage.truth`: the triage (and a map's objects) scored against a demo world's
  planted truth;
- :mod:`~pipeline.triage.feedback`: what a retraining takes from an earlier triage: ignore
  regions (``train.ignore_labels``) and hard negatives (``labels.hard_negatives``).

Exports are for human review (JOSM, MapRoulette-style challenges); nothing is uploaded.
"""
