"""The documentation keeps up with the code: column dictionaries, the README's size and links."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.audit.concepts import CONCEPT_COLUMNS
from pipeline.audit.faithfulness import FAITHFULNESS_COLUMNS
from pipeline.audit.flags import CUE_GROUP, FARM_HEAD, FLAG_COLUMNS
from pipeline.audit.patches import CUE_COLUMNS
from pipeline.audit.reliance import POOLED_COLUMNS
from pipeline.timeline.tables import SITE_COLUMNS, SITE_WINDOW_COLUMNS, WINDOW_COLUMNS
from pipeline.triage.review import CANDIDATE_COLUMNS, SUSPECT_COLUMNS

ROOT = Path(__file__).parents[1]


def test_outputs_doc_states_every_column_with_its_meaning() -> None:
    doc = (ROOT / "docs" / "outputs.md").read_text()
    for columns, prefix in (
        (FARM_HEAD, ""),
        (CUE_GROUP, "<cue>_"),
        (FLAG_COLUMNS, ""),
        (POOLED_COLUMNS, ""),
        (CUE_COLUMNS, ""),
        (FAITHFULNESS_COLUMNS, ""),
        (CONCEPT_COLUMNS, ""),
        (CANDIDATE_COLUMNS, ""),
        (SUSPECT_COLUMNS, ""),
        (WINDOW_COLUMNS, ""),
        (SITE_COLUMNS, ""),
        (SITE_WINDOW_COLUMNS, ""),
    ):
        for name, meaning in columns.pairs():
            assert f"| `{prefix}{name}` | {meaning} |" in doc, name


def test_readme_is_a_short_guide_whose_links_and_pictures_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 12_500
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme):
        assert (ROOT / target).exists(), target
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert len(pictures) == 2
    for picture in pictures:
        assert (ROOT / picture).stat().st_size < 300_000, picture
