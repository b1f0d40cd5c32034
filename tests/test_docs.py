"""Every config option is documented: in README's reference table and, with its default, in
config.yaml."""

from pathlib import Path

import pytest
import yaml

from dreamflow import config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = config.load_schema()
SECTIONS = ("resources", "dream", "blend", "scenes", "frames", "encode")


def section_keys(section):
    schema = SCHEMA["$defs"].get(section) or SCHEMA["properties"][section]
    return sorted(schema["properties"])


@pytest.mark.parametrize("section", SECTIONS + ("zoom", "sweep"))
def test_every_option_is_in_the_readme_reference(section):
    readme = (REPO / "README.md").read_text()
    prefix = f"inputs.<name>.{section}" if section in ("zoom", "sweep") else section
    missing = [key for key in section_keys(section) if f"`{prefix}.{key}`" not in readme]
    assert missing == []


@pytest.mark.parametrize("section", SECTIONS)
def test_every_option_is_set_in_config_yaml(section):
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert sorted(shipped[section]) == section_keys(section)


def test_every_top_level_option_is_documented_and_set_in_config_yaml():
    keys = [key for key in SCHEMA["properties"] if key not in SECTIONS + ("inputs",)]
    readme = (REPO / "README.md").read_text()
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    assert [key for key in keys if f"| `{key}` |" not in readme] == []
    assert [key for key in keys if key not in shipped] == []


def test_shipped_config_is_valid():
    shipped = yaml.safe_load((REPO / "config.yaml").read_text())
    config.validate(shipped)
