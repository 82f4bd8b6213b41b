"""model_zoo/README.md documents every registered model, with its measured parameter count."""
import re

import pytest

from conftest import REPO_ROOT
from model_zoo import count_parameters, create_model, list_models

ROW = re.compile(r"^\|\s*`(?P<name>[a-z0-9_]+)`\s*\|(?P<cells>.*)\|\s*$")


def documented_rows():
    rows = {}
    for line in (REPO_ROOT / "model_zoo" / "README.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            cells = [c.strip() for c in match["cells"].split("|")]
            rows[match["name"]] = cells
    return rows


ROWS = documented_rows()


@pytest.mark.parametrize("name", list_models())
def test_every_model_has_a_row_with_its_parameter_count(name):
    assert name in ROWS, f"{name} is registered but has no row in model_zoo/README.md"
    # Columns: paper | params (ours) | params (paper/reference) | GFLOPs | notes
    documented = int(ROWS[name][1].replace(",", ""))
    assert count_parameters(create_model(name, in_channels=3, num_classes=2)) == documented


def test_no_row_for_an_unregistered_model():
    assert set(ROWS) <= set(list_models())
